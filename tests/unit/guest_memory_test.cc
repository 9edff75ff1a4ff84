#include "vmm/guest_memory.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace flint {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

TEST(GuestMemory, RejectsBadRegions) {
  EXPECT_FALSE(GuestMemory::Create({}).ok());
  EXPECT_FALSE(GuestMemory::Create({{0, 0}}).ok());
  EXPECT_FALSE(GuestMemory::Create({{0x1001, 4096}}).ok());
  EXPECT_FALSE(GuestMemory::Create({{0, 4097}}).ok());
  EXPECT_FALSE(GuestMemory::Create({{0, 2 * kMiB}, {kMiB, kMiB}}).ok());       // overlap
  EXPECT_FALSE(GuestMemory::Create({{~0ull - 4095, 8192}}).ok());              // wraps
}

TEST(GuestMemory, ReadWriteRoundTripAcrossAdjacentRegions) {
  auto mem = GuestMemory::Create({{kMiB, kMiB}, {0, kMiB}});  // unsorted on purpose
  ASSERT_TRUE(mem.ok()) << mem.status();
  ASSERT_EQ(mem->regions().size(), 2u);
  EXPECT_EQ(mem->regions()[0].gpa, 0u);
  EXPECT_EQ(mem->total_size(), 2 * kMiB);
  std::vector<uint8_t> in(64);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint8_t>(i + 1);
  // Straddles the boundary between the two regions.
  ASSERT_TRUE(mem->Write(kMiB - 32, in.data(), in.size()).ok());
  std::vector<uint8_t> out(64);
  ASSERT_TRUE(mem->Read(kMiB - 32, out.data(), out.size()).ok());
  EXPECT_EQ(in, out);
  auto v = mem->ReadObj<uint32_t>(kMiB - 2);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 0x2221201Fu);
}

TEST(GuestMemory, RejectsAccessOutsideRamWithoutPartialWrites) {
  auto mem = GuestMemory::Create({{0, kMiB}, {4 * kMiB, kMiB}});
  ASSERT_TRUE(mem.ok());
  uint8_t buf[16] = {0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
                     0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa};
  // Crosses into the hole at 1 MiB: must fail and write nothing.
  EXPECT_EQ(mem->Write(kMiB - 8, buf, sizeof(buf)).code(), absl::StatusCode::kOutOfRange);
  auto first = mem->ReadObj<uint64_t>(kMiB - 8);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, 0u);
  EXPECT_FALSE(mem->Read(2 * kMiB, buf, 1).ok());            // in the hole
  EXPECT_FALSE(mem->Read(5 * kMiB, buf, 1).ok());            // past the end
  EXPECT_FALSE(mem->Read(~0ull - 3, buf, 8).ok());           // wraps
  EXPECT_FALSE(mem->Fill(5 * kMiB - 4, 0, 8).ok());
  EXPECT_TRUE(mem->Fill(5 * kMiB - 8, 0x11, 8).ok());
}

TEST(GuestMemory, SliceIsBoundedToOneRegion) {
  auto mem = GuestMemory::Create({{0, kMiB}, {kMiB, kMiB}});
  ASSERT_TRUE(mem.ok());
  EXPECT_TRUE(mem->Slice(0, kMiB).ok());
  EXPECT_FALSE(mem->Slice(kMiB - 1, 2).ok());  // straddles two mappings
  EXPECT_FALSE(mem->Slice(0, 0).ok());
  EXPECT_FALSE(mem->Slice(~0ull, 2).ok());
  EXPECT_TRUE(mem->Contains(kMiB, kMiB));
  EXPECT_FALSE(mem->Contains(kMiB, kMiB + 1));
  EXPECT_FALSE(mem->Contains(kMiB + 1, ~0ull));  // overflow-safe
  auto s = mem->Slice(kMiB + 16, 4);
  ASSERT_TRUE(s.ok());
  (*s)[0] = 0x5a;
  EXPECT_EQ(*mem->ReadObj<uint8_t>(kMiB + 16), 0x5a);
}

TEST(GuestMemory, MemfdBackingIsSharedMapping) {
  auto mem = GuestMemory::Create({{0, kMiB}}, MemoryBacking::kMemfd);
  ASSERT_TRUE(mem.ok()) << mem.status();
  EXPECT_GE(mem->regions()[0].fd, 0);
  ASSERT_TRUE(mem->WriteObj<uint32_t>(0x100, 0xfeedbeef).ok());
  uint32_t v = 0;
  ASSERT_EQ(pread(mem->regions()[0].fd, &v, 4, 0x100), 4);
  EXPECT_EQ(v, 0xfeedbeefu);
}

TEST(GuestMemory, MoveTransfersOwnership) {
  auto mem = GuestMemory::Create({{0, kMiB}});
  ASSERT_TRUE(mem.ok());
  GuestMemory a = std::move(*mem);
  EXPECT_EQ(mem->regions().size(), 0u);
  EXPECT_EQ(a.total_size(), kMiB);
  EXPECT_FALSE(mem->Read(0, nullptr, 1).ok());
}

}  // namespace
}  // namespace flint
