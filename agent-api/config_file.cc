#include "agent-api/config_file.h"

#include <google/protobuf/util/json_util.h>

#include <fstream>
#include <iterator>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "vm_config.pb.h"

namespace flint {
namespace {

// A value inside a --disk/--net list: a comma is written twice.
std::string Escape(const std::string& v) { return absl::StrReplaceAll(v, {{",", ",,"}}); }

void Flag(std::vector<std::string>* out, const char* flag, const std::string& value) {
  out->push_back(flag);
  out->push_back(value);
}

std::string DiskSpec(const flint::v1::Disk& d) {
  std::vector<std::string> items = {"path=" + Escape(d.path())};
  if (d.readonly()) items.push_back("readonly=on");
  if (d.direct()) items.push_back("direct=on");
  if (d.queues() != 0) items.push_back(absl::StrCat("queues=", d.queues()));
  if (!d.serial().empty()) items.push_back("serial=" + Escape(d.serial()));
  return absl::StrJoin(items, ",");
}

absl::StatusOr<std::string> NicSpec(const flint::v1::Nic& n, int index) {
  std::vector<std::string> items;
  switch (n.backend_case()) {
    case flint::v1::Nic::kPasst:
      items.push_back("passt");
      for (const std::string& t : n.passt().tcp()) items.push_back("tcp=" + Escape(t));
      for (const std::string& u : n.passt().udp()) items.push_back("udp=" + Escape(u));
      if (!n.passt().addr().empty()) items.push_back("addr=" + Escape(n.passt().addr()));
      break;
    case flint::v1::Nic::kTap:
      if (!n.tap().name().empty()) {
        items.push_back("tap=" + Escape(n.tap().name()));
      } else {
        items.push_back(absl::StrCat("fd=", n.tap().fd()));
      }
      if (n.tap().queues() != 0) items.push_back(absl::StrCat("queues=", n.tap().queues()));
      break;
    case flint::v1::Nic::BACKEND_NOT_SET:
      return absl::InvalidArgumentError(
          absl::StrFormat("nics[%d] has no backend: give \"passt\": {} or \"tap\": {...}", index));
  }
  if (!n.mac().empty()) items.push_back("mac=" + Escape(n.mac()));
  if (n.mtu() != 0) items.push_back(absl::StrCat("mtu=", n.mtu()));
  return absl::StrJoin(items, ",");
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ConfigJsonToOptions(const std::string& json) {
  flint::v1::VmConfig c;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;  // a typo must not be silently ignored
  const auto status = google::protobuf::util::JsonStringToMessage(json, &c, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("not a flint.v1.VmConfig in JSON: %s", status.message().as_string()));
  }
  std::vector<std::string> out;
  if (c.cpus() != 0) Flag(&out, "--cpus", absl::StrCat(c.cpus()));
  if (c.memory_mib() != 0) Flag(&out, "--memory", absl::StrCat(c.memory_mib(), "M"));
  if (!c.memory_backing().empty()) Flag(&out, "--memory-backing", c.memory_backing());
  if (!c.kernel().empty()) Flag(&out, "--kernel", c.kernel());
  if (!c.initrd().empty()) Flag(&out, "--initrd", c.initrd());
  if (c.has_cmdline()) Flag(&out, "--cmdline", c.cmdline());
  if (!c.serial().empty()) Flag(&out, "--serial", c.serial());
  if (!c.io_engine().empty()) Flag(&out, "--io-engine", c.io_engine());
  for (const auto& d : c.disks()) Flag(&out, "--disk", DiskSpec(d));
  for (int i = 0; i < c.nics_size(); ++i) {
    absl::StatusOr<std::string> spec = NicSpec(c.nics(i), i);
    if (!spec.ok()) return spec.status();
    Flag(&out, "--net", *spec);
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> ExpandConfigOption(const std::vector<std::string>& args) {
  if (args.empty() || args[0] != "run") return args;
  std::vector<std::string> rest;
  std::string path;
  bool found = false;
  for (size_t i = 1; i < args.size(); ++i) {
    std::string value;
    if (args[i] == "--config") {
      if (i + 1 >= args.size()) return absl::InvalidArgumentError("--config needs a file");
      value = args[++i];
    } else if (args[i].rfind("--config=", 0) == 0) {
      value = args[i].substr(9);
    } else {
      rest.push_back(args[i]);
      continue;
    }
    if (found) return absl::InvalidArgumentError("--config is given more than once");
    if (value.empty()) return absl::InvalidArgumentError("--config needs a file");
    found = true;
    path = value;
  }
  if (!found) return args;
  constexpr size_t kMaxConfigBytes = 1 << 20;
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrFormat("--config %s: cannot open the file", path));
  std::string json;
  json.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (json.size() > kMaxConfigBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--config %s: larger than %u bytes", path, kMaxConfigBytes));
  }
  absl::StatusOr<std::vector<std::string>> from_file = ConfigJsonToOptions(json);
  if (!from_file.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--config %s: %s", path, from_file.status().message()));
  }
  // Every option the file can set, whether or not this file sets it.
  static const std::set<std::string> kShapes = {
      "--cpus", "--memory", "--memory-backing", "--kernel", "--initrd", "--cmdline",
      "--serial", "--io-engine", "--disk", "--net"};
  for (const std::string& a : rest) {
    const std::string flag = a.substr(0, a.find('='));
    if (kShapes.count(flag) != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s is given on the command line and --config %s describes the VM: put it in the file",
          flag, path));
    }
  }
  std::vector<std::string> out = {"run"};
  out.insert(out.end(), from_file->begin(), from_file->end());
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

}  // namespace flint
