#include "vmm/cli.h"

#include <gtest/gtest.h>

namespace flint {
namespace {

absl::StatusOr<Command> Parse(std::vector<std::string> a) { return ParseCommandLine(a); }

TEST(Cli, DefaultsBootTheEmbeddedDemo) {
  auto c = Parse({"run"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kind, Command::Kind::kRun);
  EXPECT_TRUE(c->run.kernel_path.empty());
  EXPECT_EQ(c->run.cpus, 1u);
  EXPECT_EQ(c->run.memory_bytes, 256ull << 20);
  EXPECT_TRUE(c->run.reboot);
  EXPECT_FALSE(c->run.cmdline.has_value());
}

TEST(Cli, ParsesEveryOption) {
  auto c = Parse({"run", "--kernel", "/k", "--initrd=/i", "--cmdline", "console=ttyS0 x=1",
                  "--cpus", "4", "--memory", "2G", "--serial", "file:/tmp/out", "--stats",
                  "--no-reboot", "--memory-backing", "memfd"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->run.kernel_path, "/k");
  EXPECT_EQ(c->run.initrd_path, "/i");
  EXPECT_EQ(*c->run.cmdline, "console=ttyS0 x=1");
  EXPECT_EQ(c->run.cpus, 4u);
  EXPECT_EQ(c->run.memory_bytes, 2ull << 30);
  EXPECT_EQ(c->run.serial_file, "/tmp/out");
  EXPECT_TRUE(c->run.stats);
  EXPECT_FALSE(c->run.reboot);
  EXPECT_EQ(c->run.backing, MemoryBacking::kMemfd);
  EXPECT_TRUE(Parse({"run", "--cmdline", ""}).ok());  // an empty command line is legitimate
}

TEST(Cli, IoeventfdSinkTakesDecimalOrHex) {
  EXPECT_EQ(*Parse({"run", "--ioeventfd-sink", "0x5f0"})->run.ioeventfd_sink_port, 0x5f0);
  EXPECT_EQ(*Parse({"run", "--ioeventfd-sink", "1520"})->run.ioeventfd_sink_port, 1520);
  EXPECT_FALSE(Parse({"run", "--ioeventfd-sink", "0x10000"}).ok());
  EXPECT_FALSE(Parse({"run", "--ioeventfd-sink", "0x"}).ok());
  EXPECT_FALSE(Parse({"run", "--ioeventfd-sink", "0xfg"}).ok());
}

TEST(Cli, HelpAndVersion) {
  EXPECT_EQ(Parse({"--help"})->kind, Command::Kind::kHelp);
  EXPECT_EQ(Parse({"run", "--cpus", "2", "--help"})->kind, Command::Kind::kHelp);
  EXPECT_EQ(Parse({"--version"})->kind, Command::Kind::kVersion);
  EXPECT_NE(UsageText().find("--kernel"), std::string::npos);
}

struct Bad {
  std::vector<std::string> args;
  std::string message_part;
};

class CliRejects : public testing::TestWithParam<Bad> {};

TEST_P(CliRejects, WithAnActionableMessage) {
  auto c = Parse(GetParam().args);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(c.status().message()).find(GetParam().message_part), std::string::npos)
      << c.status();
}

INSTANTIATE_TEST_SUITE_P(
    All, CliRejects,
    testing::Values(Bad{{}, "missing command"}, Bad{{"boot"}, "unknown command"},
                    Bad{{"run", "--cpus"}, "needs a value"}, Bad{{"run", "--cpus", "0"}, "out of range"},
                    Bad{{"run", "--cpus", "255"}, "out of range"}, Bad{{"run", "--cpus", "two"}, "whole number"},
                    Bad{{"run", "--cpus", "-1"}, "whole number"}, Bad{{"run", "--cpus", "2x"}, "whole number"},
                    Bad{{"run", "--memory", "4M"}, "minimum"}, Bad{{"run", "--memory", "2T"}, "limit"},
                    Bad{{"run", "--memory", "99999999999999999999"}, "size"},
                    Bad{{"run", "--memory", "1000B"}, "minimum"}, Bad{{"run", "--memory", "12345679B"}, "4 KiB"},
                    Bad{{"run", "--memory", "G"}, "size"}, Bad{{"run", "--memory", ""}, "size"},
                    Bad{{"run", "--serial", "tcp:1"}, "stdout or file:PATH"}, Bad{{"run", "--serial", "file:"}, "file:PATH"},
                    Bad{{"run", "--kernel", ""}, "needs a path"}, Bad{{"run", "--initrd", "/i"}, "needs --kernel"},
                    Bad{{"run", "--stats=yes"}, "takes no value"}, Bad{{"run", "--bogus"}, "unknown option"},
                    Bad{{"run", "--cpus", "1", "--cpus", "2"}, "more than once"},
                    Bad{{"run", "--memory-backing", "swap"}, "anon, memfd or hugetlb"},
                    Bad{{"run", "--memory-backing", "hugetlb", "--memory", "9M"}, "2 MiB"}));

TEST(Cli, MemorySizes) {
  EXPECT_EQ(*ParseMemorySize("512"), 512ull << 20);
  EXPECT_EQ(*ParseMemorySize("1g"), 1ull << 30);
  EXPECT_EQ(*ParseMemorySize("65536K"), 64ull << 20);
  EXPECT_EQ(*ParseMemorySize("1T"), 1ull << 40);
  EXPECT_FALSE(ParseMemorySize("1.5G").ok());
  EXPECT_FALSE(ParseMemorySize("18446744073709551615M").ok());  // would overflow when shifted
}

}  // namespace
}  // namespace flint
