#include "k8s-shim/vm_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_format.h"
#include "k8s-shim/files.h"
#include "vmm/kvm/unique_fd.h"

namespace flint::shim {
namespace {

using flint::shim::v1::VmRecord;

absl::Status Errno(int err, const std::string& what) {
  return absl::InternalError(absl::StrFormat("%s: %s", what, strerror(err)));
}

absl::Status MakeDir(const std::string& path) {
  if (mkdir(path.c_str(), 0700) == 0 || errno == EEXIST) {
    struct stat st;
    if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrFormat("%s exists and is not a directory", path));
  }
  return Errno(errno, "creating " + path);
}

}  // namespace

absl::Status ValidateSlotId(const std::string& id) {
  const bool chars_ok = std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
  });
  if (id.empty() || id.size() > 64 || !chars_ok || id == "." || id == "..") {
    return absl::InvalidArgumentError(absl::StrFormat(
        "slot id \"%s\": use 1..64 characters from [A-Za-z0-9._-] (not \".\" or \"..\")", id));
  }
  return absl::OkStatus();
}

std::string VmStore::ToJson(const VmRecord& record) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  std::string out;
  // Printing a well-formed message cannot fail (bytes become base64).
  (void)google::protobuf::util::MessageToJsonString(record, &out, options);
  return out;
}

absl::StatusOr<VmRecord> VmStore::FromJson(const std::string& json) {
  VmRecord record;
  google::protobuf::util::JsonParseOptions options;
  // A record written by a newer shim still loads in an older one.
  options.ignore_unknown_fields = true;
  const auto status = google::protobuf::util::JsonStringToMessage(json, &record, options);
  if (!status.ok()) {
    return absl::DataLossError(absl::StrFormat("not a flint.shim.v1.VmRecord in JSON: %s",
                                               status.message().as_string()));
  }
  return record;
}

absl::Status VmStore::Open() {
  if (state_dir_.empty()) return absl::InvalidArgumentError("the state directory is empty");
  return MakeDir(state_dir_);
}

std::string VmStore::SetAside(const std::string& path) {
  for (int n = 1; n < 10000; ++n) {
    const std::string to = absl::StrFormat("%s.corrupt-%d", path, n);
    struct stat st;
    if (lstat(to.c_str(), &st) == 0) continue;
    if (rename(path.c_str(), to.c_str()) == 0) return to;
    return absl::StrFormat("(could not rename it: %s)", strerror(errno));
  }
  return "(too many set-aside records already; left in place)";
}

std::vector<VmRecord> VmStore::LoadAll(std::vector<std::string>* warnings) {
  std::vector<VmRecord> records;
  DIR* dir = opendir(state_dir_.c_str());
  if (dir == nullptr) {
    warnings->push_back(
        absl::StrFormat("cannot list the state directory %s: %s", state_dir_, strerror(errno)));
    return records;
  }
  std::vector<std::string> names;
  while (dirent* e = readdir(dir)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    names.push_back(name);
  }
  closedir(dir);
  std::sort(names.begin(), names.end());

  for (const std::string& id : names) {
    struct stat st;
    if (stat(SlotDir(id).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    if (!ValidateSlotId(id).ok()) {
      warnings->push_back(absl::StrFormat("%s: not a slot directory name; ignored", SlotDir(id)));
      continue;
    }
    const std::string path = RecordPath(id);
    // A temporary file left by a crash in the middle of Save: the record it
    // was replacing is still whole, so the temporary file goes.
    unlink((path + ".tmp").c_str());
    absl::StatusOr<std::string> json = ReadFile(path);
    if (!json.ok()) {
      if (absl::IsNotFound(json.status())) {
        warnings->push_back(absl::StrFormat("%s: no record.json; ignored", SlotDir(id)));
      } else {
        warnings->push_back(std::string(json.status().message()));
      }
      continue;
    }
    absl::StatusOr<VmRecord> record = FromJson(*json);
    absl::Status problem = record.status();
    if (problem.ok() && record->id() != id) {
      problem = absl::DataLossError(
          absl::StrFormat("its id \"%s\" is not its directory's name", record->id()));
    }
    if (!problem.ok()) {
      const std::string moved = SetAside(path);
      warnings->push_back(absl::StrFormat("%s: %s; set aside as %s", path, problem.message(),
                                          moved));
      continue;
    }
    records.push_back(std::move(*record));
  }
  return records;
}

absl::Status VmStore::Save(const VmRecord& record) {
  if (absl::Status s = ValidateSlotId(record.id()); !s.ok()) return s;
  if (absl::Status s = MakeDir(SlotDir(record.id())); !s.ok()) return s;
  // Durable: a record lost to a host crash is a VM no restarted shim finds.
  return WriteFileAtomic(RecordPath(record.id()), ToJson(record), 0600, /*durable=*/true);
}

absl::Status VmStore::Remove(const std::string& id) {
  if (absl::Status s = ValidateSlotId(id); !s.ok()) return s;
  std::error_code ec;
  std::filesystem::remove_all(SlotDir(id), ec);
  if (ec) {
    return absl::InternalError(absl::StrFormat("removing %s: %s", SlotDir(id), ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace flint::shim
