#include "vmm/bus.h"

#include <gtest/gtest.h>

#include <vector>

namespace flint {
namespace {

class Recorder : public BusDevice {
 public:
  std::string_view name() const override { return "rec"; }
  void Read(uint64_t offset, std::span<uint8_t> data) override {
    for (auto& b : data) b = static_cast<uint8_t>(offset);
  }
  void Write(uint64_t offset, std::span<const uint8_t> data) override {
    writes.push_back({offset, data[0]});
  }
  std::vector<std::pair<uint64_t, uint8_t>> writes;
};

TEST(Bus, DispatchesByRangeWithOffsets) {
  Bus bus("pio");
  auto a = std::make_shared<Recorder>();
  auto b = std::make_shared<Recorder>();
  ASSERT_TRUE(bus.Register(0x3f8, 8, a).ok());
  ASSERT_TRUE(bus.Register(0x60, 5, b).ok());
  uint8_t v = 0x42;
  EXPECT_EQ(bus.Write(0x3fd, std::span<const uint8_t>(&v, 1)), bus.Find(0x3f8));
  ASSERT_EQ(a->writes.size(), 1u);
  EXPECT_EQ(a->writes[0].first, 5u);
  EXPECT_EQ(a->writes[0].second, 0x42);
  uint8_t r[2];
  EXPECT_GE(bus.Read(0x64, r), 0);
  EXPECT_EQ(r[0], 4);
  EXPECT_EQ(bus.range(bus.Find(0x60)).label, "rec@0x60");
}

TEST(Bus, UnclaimedReadsReturnAllOnes) {
  Bus bus("mmio");
  uint8_t r[4] = {0, 0, 0, 0};
  EXPECT_EQ(bus.Read(0xd0000000, r), -1);
  EXPECT_EQ(r[0], 0xff);
  EXPECT_EQ(r[3], 0xff);
  uint8_t v = 1;
  EXPECT_EQ(bus.Write(0, std::span<const uint8_t>(&v, 1)), -1);
}

TEST(Bus, BoundariesAreExact) {
  Bus bus("pio");
  auto d = std::make_shared<Recorder>();
  ASSERT_TRUE(bus.Register(0x100, 0x10, d).ok());
  EXPECT_EQ(bus.Find(0xff), -1);
  EXPECT_EQ(bus.Find(0x100), 0);
  EXPECT_EQ(bus.Find(0x10f), 0);
  EXPECT_EQ(bus.Find(0x110), -1);
}

TEST(Bus, RejectsOverlapEmptyWrapAndLateRegistration) {
  Bus bus("pio");
  auto d = std::make_shared<Recorder>();
  ASSERT_TRUE(bus.Register(0x100, 0x10, d).ok());
  EXPECT_EQ(bus.Register(0x108, 0x10, d).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(bus.Register(0xf8, 0x10, d).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(bus.Register(0x0, 0x1000, d).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(bus.Register(0x200, 0, d).ok());
  EXPECT_FALSE(bus.Register(~0ull - 1, 4, d).ok());
  EXPECT_TRUE(bus.Register(0x110, 0x10, d).ok());  // adjacent is fine
  bus.Freeze();
  EXPECT_EQ(bus.Register(0x300, 1, d).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(Bus, ManyRangesBinarySearch) {
  Bus bus("mmio");
  auto d = std::make_shared<Recorder>();
  for (uint64_t i = 0; i < 100; ++i) ASSERT_TRUE(bus.Register(0x1000 * (99 - i), 0x800, d).ok());
  for (uint64_t i = 0; i < 100; ++i) {
    EXPECT_EQ(bus.Find(0x1000 * i + 0x7ff), static_cast<int>(i));
    EXPECT_EQ(bus.Find(0x1000 * i + 0x800), -1);
  }
}

// A frozen port bus answers from its two-level index: every port, and
// every address past the port space, must get exactly the binary search's
// answer.
TEST(Bus, FrozenPortIndexAgreesWithTheSearchEverywhere) {
  auto d = std::make_shared<Recorder>();
  Bus searched("pio"), indexed("pio");
  const std::pair<uint64_t, uint64_t> ranges[] = {
      {0x0, 1}, {0x60, 1}, {0x64, 1}, {0x70, 2}, {0xf4, 1}, {0xff, 2}, {0x3f8, 8},
      {0x600, 2}, {0xcf8, 8}, {0xfff0, 0x10}};
  for (auto [base, len] : ranges) {
    ASSERT_TRUE(searched.Register(base, len, d).ok());
    ASSERT_TRUE(indexed.Register(base, len, d).ok());
  }
  indexed.Freeze();
  for (uint64_t port = 0; port < 0x10000 + 16; ++port) {
    ASSERT_EQ(indexed.Find(port), searched.Find(port)) << "port 0x" << std::hex << port;
  }
  EXPECT_EQ(indexed.Find(0x100ff), -1);
  EXPECT_EQ(indexed.Find(~0ull), -1);
  EXPECT_EQ(indexed.Find(0x3fb), 6);
  EXPECT_EQ(indexed.Find(0x100), 5);  // the range straddling a 256-port block
}

// MMIO buses (ranges above 64 KiB) keep the binary search after Freeze.
TEST(Bus, FrozenMmioBusStillFindsRanges) {
  Bus bus("mmio");
  auto d = std::make_shared<Recorder>();
  ASSERT_TRUE(bus.Register(0xd0000000, 0x1000, d).ok());
  ASSERT_TRUE(bus.Register(0x3f8, 8, d).ok());
  bus.Freeze();
  EXPECT_EQ(bus.Find(0xd0000fff), 1);
  EXPECT_EQ(bus.Find(0x3f9), 0);
  EXPECT_EQ(bus.Find(0xd0001000), -1);
}

}  // namespace
}  // namespace flint
