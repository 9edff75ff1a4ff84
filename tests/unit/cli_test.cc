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
                    Bad{{"run", "--memory-backing", "hugetlb", "--memory", "9M"}, "2 MiB"},
                    Bad{{"run", "--disk"}, "needs a value"},
                    Bad{{"run", "--disk", "readonly=on"}, "needs path=IMG"},
                    Bad{{"run", "--disk", "path="}, "needs an image"},
                    Bad{{"run", "--disk", "/img"}, "key=value"},
                    Bad{{"run", "--disk", "path=/a,readonly=yes"}, "on or off"},
                    Bad{{"run", "--disk", "path=/a,queues=0"}, "out of range 1..16"},
                    Bad{{"run", "--disk", "path=/a,queues=17"}, "out of range 1..16"},
                    Bad{{"run", "--disk", "path=/a,queues=x"}, "whole number"},
                    Bad{{"run", "--disk", "path=/a,serial=123456789012345678901"}, "20 bytes"},
                    Bad{{"run", "--disk", "path=/a,serial=a b"}, "printable"},
                    Bad{{"run", "--disk", "path=/a,cache=none"}, "no option 'cache'"},
                    Bad{{"run", "--disk", "path=/a,path=/b"}, "more than once"},
                    Bad{{"run", "--disk", "path=/a", "--disk", "path=/a,readonly=on"}, "given twice"},
                    Bad{{"run", "--io-engine", "aio"}, "auto, io_uring or threads"},
                    Bad{{"run", "--net", "slirp"}, "passt, tap=NAME or fd=N"},
                    Bad{{"run", "--net", "tap="}, "passt, tap=NAME or fd=N"},
                    Bad{{"run", "--net", "tap=abcdefghijklmnop"}, "15 characters"},
                    Bad{{"run", "--net", "fd=2"}, "3 or above"},
                    Bad{{"run", "--net", "fd=x"}, "whole number"},
                    Bad{{"run", "--net", "passt,mac=52:54:00:12:34"}, "not a MAC"},
                    Bad{{"run", "--net", "passt,mac=52-54-00-12-34-56"}, "not a MAC"},
                    Bad{{"run", "--net", "passt,mac=01:00:5e:00:00:01"}, "multicast"},
                    Bad{{"run", "--net", "passt,mac=00:00:00:00:00:00"}, "not a usable"},
                    Bad{{"run", "--net", "passt,mtu=67"}, "68..65520"},
                    Bad{{"run", "--net", "passt,mtu=65521"}, "68..65520"},
                    Bad{{"run", "--net", "passt,tcp="}, "needs a port spec"},
                    Bad{{"run", "--net", "passt,tcp=80 -x"}, "port spec has digits"},
                    Bad{{"run", "--net", "passt,addr=10.0.0"}, "not an IPv4"},
                    Bad{{"run", "--net", "passt,addr=10.0.0.256"}, "not an IPv4"},
                    Bad{{"run", "--net", "passt,addr=10..0.1"}, "not an IPv4"},
                    Bad{{"run", "--net", "passt,queues=2"}, "needs tap=NAME"},
                    Bad{{"run", "--net", "fd=5,queues=2"}, "needs tap=NAME"},
                    Bad{{"run", "--net", "tap=t0,tcp=80"}, "passt option"},
                    Bad{{"run", "--net", "tap=t0,queues=9"}, "1..8"},
                    Bad{{"run", "--net", "tap=t0,mtu=1500,mtu=9000"}, "more than once"},
                    Bad{{"run", "--net", "passt,speed=10"}, "no option 'speed'"},
                    Bad{{"run", "--net", "tap=t0", "--net", "tap=t0"}, "given twice"},
                    Bad{{"run", "--net", "passt,mac=52:54:00:00:00:01", "--net",
                         "passt,mac=52:54:00:00:00:01"}, "same MAC"},
                    Bad{{"run", "--control-socket", ""}, "needs a path"},
                    Bad{{"run", "--api-socket", ""}, "--api-socket needs a path"},
                    Bad{{"run", "--api-socket"}, "--api-socket"}));

TEST(Cli, NicsParse) {
  absl::StatusOr<Command> c = ParseCommandLine(
      {"run", "--net", "passt,mac=52:54:00:ab:cd:ef,tcp=8080,tcp=2222:22,udp=5353,mtu=9000,addr=10.0.2.15",
       "--net", "tap=flint0,queues=4", "--net=fd=7", "--control-socket", "/run/vm.sock",
       "--api-socket", "/run/vm-api.sock"});
  ASSERT_TRUE(c.ok()) << c.status();
  const auto& n = c->run.nics;
  ASSERT_EQ(n.size(), 3u);
  EXPECT_EQ(n[0].backend, NicConfig::Backend::kPasst);
  EXPECT_EQ(n[0].mac, (std::array<uint8_t, 6>{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}));
  EXPECT_EQ(n[0].tcp, (std::vector<std::string>{"8080", "2222:22"}));
  EXPECT_EQ(n[0].udp, (std::vector<std::string>{"5353"}));
  EXPECT_EQ(n[0].mtu, 9000);
  EXPECT_EQ(n[0].ipv4, "10.0.2.15");
  EXPECT_EQ(n[1].backend, NicConfig::Backend::kTap);
  EXPECT_EQ(n[1].tap_name, "flint0");
  EXPECT_EQ(n[1].queues, 4);
  EXPECT_EQ(n[1].mac, (std::array<uint8_t, 6>{}));  // flint picks one
  EXPECT_EQ(n[2].tap_fd, 7);
  EXPECT_EQ(c->run.control_socket, "/run/vm.sock");
  EXPECT_EQ(c->run.api_socket, "/run/vm-api.sock");
}

TEST(Cli, DisksAreRepeatableAndKeepTheirOrder) {
  absl::StatusOr<Command> c = ParseCommandLine(
      {"run", "--disk", "path=/a.img,readonly=on,serial=vol-1", "--disk=path=/b,,c.img,direct=on,queues=4",
       "--io-engine", "threads"});
  ASSERT_TRUE(c.ok()) << c.status();
  const auto& d = c->run.disks;
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].path, "/a.img");
  EXPECT_TRUE(d[0].readonly);
  EXPECT_FALSE(d[0].direct);
  EXPECT_EQ(d[0].queues, 1);
  EXPECT_EQ(d[0].serial, "vol-1");
  EXPECT_EQ(d[1].path, "/b,c.img");  // ",," is a literal comma
  EXPECT_FALSE(d[1].readonly);
  EXPECT_TRUE(d[1].direct);
  EXPECT_EQ(d[1].queues, 4);
  EXPECT_EQ(c->run.io_engine, IoEngine::kThreads);
  EXPECT_EQ(ParseCommandLine({"run"})->run.io_engine, IoEngine::kAuto);
}

TEST(Cli, AtMostOneDiskPerPciSlot) {
  std::vector<std::string> args = {"run"};
  for (size_t i = 0; i <= kMaxPciDevices; ++i) {
    args.push_back("--disk");
    args.push_back("path=/d" + std::to_string(i));
  }
  absl::StatusOr<Command> c = ParseCommandLine(args);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("31 device slots"), std::string::npos) << c.status();
  args.resize(args.size() - 2);
  EXPECT_TRUE(ParseCommandLine(args).ok());
}

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
