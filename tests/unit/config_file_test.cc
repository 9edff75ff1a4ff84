// `flint run --config FILE`: the JSON schema maps onto the same options
// (and so the same checks) as the command line.
#include "agent-api/config_file.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "vmm/cli.h"

namespace flint {
namespace {

using Args = std::vector<std::string>;

std::string WriteConfig(const std::string& name, const std::string& json) {
  const std::string path =
      std::string(FLINT_BUILD_ROOT) + "/" + name + "-" + std::to_string(getpid()) + ".json";
  std::ofstream(path) << json;
  return path;
}

TEST(ConfigFile, EveryFieldBecomesItsOption) {
  absl::StatusOr<Args> a = ConfigJsonToOptions(R"({
    "cpus": 4, "memoryMib": 1024, "memoryBacking": "memfd",
    "kernel": "/boot/vmlinux", "initrd": "/boot/initrd", "cmdline": "console=ttyS0",
    "serial": "file:/tmp/c.log", "ioEngine": "threads",
    "disks": [{"path": "/img/a,b.raw", "readonly": true, "direct": true, "queues": 2,
               "serial": "vol0"}],
    "nics": [{"passt": {"tcp": ["2222:22"], "udp": ["5353"], "addr": "10.0.2.15"},
              "mac": "52:54:00:00:00:01", "mtu": 9000},
             {"tap": {"name": "tap0", "queues": 2}}, {"tap": {"fd": 5}}]
  })");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*a, (Args{"--cpus", "4", "--memory", "1024M", "--memory-backing", "memfd",
                      "--kernel", "/boot/vmlinux", "--initrd", "/boot/initrd", "--cmdline",
                      "console=ttyS0", "--serial", "file:/tmp/c.log", "--io-engine", "threads",
                      "--disk", "path=/img/a,,b.raw,readonly=on,direct=on,queues=2,serial=vol0",
                      "--net",
                      "passt,tcp=2222:22,udp=5353,addr=10.0.2.15,mac=52:54:00:00:00:01,mtu=9000",
                      "--net", "tap=tap0,queues=2", "--net", "fd=5"}));
  // And the command-line parser takes them as they are.
  Args run = {"run"};
  run.insert(run.end(), a->begin(), a->end());
  absl::StatusOr<Command> c = ParseCommandLine(run);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->run.cpus, 4u);
  EXPECT_EQ(c->run.memory_bytes, 1024ull << 20);
  ASSERT_EQ(c->run.disks.size(), 1u);
  EXPECT_EQ(c->run.disks[0].path, "/img/a,b.raw");
  ASSERT_EQ(c->run.nics.size(), 3u);
  EXPECT_EQ(c->run.nics[0].tcp, (std::vector<std::string>{"2222:22"}));
  EXPECT_EQ(c->run.nics[2].tap_fd, 5);
}

TEST(ConfigFile, EmptyObjectMeansAllDefaults) {
  absl::StatusOr<Args> a = ConfigJsonToOptions("{}");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->empty());
}

TEST(ConfigFile, TyposAndBadJsonAreErrorsNotIgnored) {
  for (const char* bad : {R"({"cpu": 2})", R"({"cpus": "many"})", R"({"cpus": -1})",
                          R"({"disks": [{"size": 1}]})", "{", "[]"}) {
    absl::StatusOr<Args> a = ConfigJsonToOptions(bad);
    EXPECT_FALSE(a.ok()) << bad;
    if (!a.ok()) {
      EXPECT_NE(a.status().message().find("not a flint.v1.VmConfig"), std::string::npos)
          << a.status();
    }
  }
  absl::StatusOr<Args> nic = ConfigJsonToOptions(R"({"nics": [{"mac": "52:54:00:00:00:01"}]})");
  ASSERT_FALSE(nic.ok());
  EXPECT_NE(nic.status().message().find("nics[0] has no backend"), std::string::npos);
}

TEST(ConfigFile, BadValuesGetTheCommandLinesMessage) {
  const std::string path = WriteConfig("cfg-bad", R"({"cpus": 999})");
  absl::StatusOr<Args> a = ExpandConfigOption({"run", "--config", path});
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<Command> c = ParseCommandLine(*a);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("--cpus 999 is out of range"), std::string::npos)
      << c.status();
  unlink(path.c_str());
}

TEST(ConfigFile, ExpandKeepsRuntimeOptionsAndRefusesDoubleShaping) {
  const std::string path = WriteConfig("cfg-ok", R"({"cpus": 2, "disks": [{"path": "/d"}]})");
  absl::StatusOr<Args> a =
      ExpandConfigOption({"run", "--stats", "--config=" + path, "--control-socket", "/s"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*a, (Args{"run", "--cpus", "2", "--disk", "path=/d", "--stats", "--control-socket",
                      "/s"}));
  absl::StatusOr<Args> twice = ExpandConfigOption({"run", "--config", path, "--cpus", "4"});
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("--cpus is given on the command line"),
            std::string::npos);
  EXPECT_FALSE(ExpandConfigOption({"run", "--config", path, "--disk=path=/e"}).ok());
  EXPECT_FALSE(ExpandConfigOption({"run", "--config", path, "--config", path}).ok());
  EXPECT_FALSE(ExpandConfigOption({"run", "--config"}).ok());
  absl::StatusOr<Args> missing = ExpandConfigOption({"run", "--config", "/nonexistent.json"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("cannot open"), std::string::npos);
  // Without --config nothing changes.
  EXPECT_EQ(*ExpandConfigOption({"run", "--cpus", "3"}), (Args{"run", "--cpus", "3"}));
  unlink(path.c_str());
}

}  // namespace
}  // namespace flint
