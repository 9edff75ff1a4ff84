// The shim's memory across restarts: one flint.shim.v1.VmRecord per launcher
// slot, as proto3 JSON in STATE_DIR/<id>/record.json. A restarted shim loads
// every record, serves each launcher socket again and re-attaches to the VMs
// (which never stopped: they are not the shim's children).
//
// Writes are atomic (record.json.tmp written, fsync'd, renamed over
// record.json, the directory fsync'd), so a crash leaves the old record or the
// new one, never half of one. A record that cannot be read back is renamed to
// record.json.corrupt-N (kept for a person to look at, never deleted) and
// skipped with a warning; the other records still load.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "shim.pb.h"

namespace flint::shim {

// A slot id: [A-Za-z0-9._-]{1,64}, not "." or "..": it names a directory.
absl::Status ValidateSlotId(const std::string& id);

class VmStore {
 public:
  // `state_dir` is created (mode 0700) by Open if missing.
  explicit VmStore(std::string state_dir) : state_dir_(std::move(state_dir)) {}

  absl::Status Open();

  // Every readable record, sorted by id. `warnings` gets one line per record
  // that was set aside (and renamed) or directory that holds none.
  std::vector<flint::shim::v1::VmRecord> LoadAll(std::vector<std::string>* warnings);

  // Writes STATE_DIR/<record.id>/record.json atomically (creating the
  // directory); INVALID_ARGUMENT for a bad id.
  absl::Status Save(const flint::shim::v1::VmRecord& record);

  // Removes STATE_DIR/<id> and everything in it (the VM's directory too).
  absl::Status Remove(const std::string& id);

  const std::string& state_dir() const { return state_dir_; }
  std::string SlotDir(const std::string& id) const { return state_dir_ + "/" + id; }
  std::string RecordPath(const std::string& id) const { return SlotDir(id) + "/record.json"; }
  // The VM's own directory (flint's config, API socket, logs): STATE_DIR/<id>/vm.
  std::string VmDir(const std::string& id) const { return SlotDir(id) + "/vm"; }

  // The JSON form of a record and its parse, exposed for tests and tools.
  static std::string ToJson(const flint::shim::v1::VmRecord& record);
  static absl::StatusOr<flint::shim::v1::VmRecord> FromJson(const std::string& json);

 private:
  // Renames a bad record to record.json.corrupt-N (the first free N).
  std::string SetAside(const std::string& path);

  const std::string state_dir_;
};

}  // namespace flint::shim
