#include "vmm/exit_stats.h"

#include <gtest/gtest.h>
#include <linux/kvm.h>

#include "vmm/devices/debug_exit.h"

namespace flint {
namespace {

TEST(ExitStats, SumsAcrossVcpusByReasonAndRange) {
  Bus pio("pio"), mmio("mmio");
  ASSERT_TRUE(pio.Register(0xf4, 1, std::make_shared<DebugExit>([](StopReason) {})).ok());
  VcpuExitStats a(pio.size(), mmio.size()), b(pio.size(), mmio.size());
  for (int i = 0; i < 3; ++i) a.CountExit(KVM_EXIT_IO);
  b.CountExit(KVM_EXIT_IO);
  b.CountExit(KVM_EXIT_MMIO);
  b.CountExit(1000);  // out-of-table reasons share the last slot instead of overflowing
  a.CountPio(0);
  a.CountPio(-1);
  b.CountPio(-1);
  b.CountMmio(-1);
  ExitStatsSnapshot s = SnapshotExitStats({&a, &b}, pio, mmio);
  EXPECT_EQ(s.total_exits, 6u);
  ASSERT_EQ(s.by_reason.size(), 3u);
  EXPECT_EQ(s.by_reason[0].name, "IO");
  EXPECT_EQ(s.by_reason[0].count, 4u);
  EXPECT_EQ(s.by_reason[1].name, "MMIO");
  ASSERT_EQ(s.by_range.size(), 3u);
  EXPECT_EQ(s.by_range[0].name, "pio unhandled");
  EXPECT_EQ(s.by_range[0].count, 2u);
  EXPECT_EQ(s.by_range[1].name, "pio debug-exit@0xf4");
  EXPECT_EQ(s.by_range[2].name, "mmio unhandled");
  std::string text = s.Format();
  EXPECT_NE(text.find("6 total"), std::string::npos);
  EXPECT_NE(text.find("debug-exit@0xf4"), std::string::npos);
}

}  // namespace
}  // namespace flint
