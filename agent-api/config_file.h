// `flint run --config FILE`: a VM configuration in proto3 JSON
// (agent-api/proto/flint/v1/vm_config.proto), turned into the `flint run`
// options it stands for. The options then go through the same parser and
// checks as a command line (vmm/cli.cc), so the file and the flags accept
// exactly the same things and say the same thing about a bad value.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace flint {

// The `flint run` options (without "run") for a VmConfig in proto3 JSON.
// Errors: malformed JSON, unknown fields, a value the schema's type cannot
// hold; each names the problem.
absl::StatusOr<std::vector<std::string>> ConfigJsonToOptions(const std::string& json);

// `args` as main() has them (no argv[0]). When they are `run ... --config
// FILE ...` (or --config=FILE), returns them with --config replaced by the
// file's options; otherwise unchanged. Options that shape the VM may come
// from the file or the command line, not both (an error names the option);
// the rest (--stats, --control-socket, --no-reboot, ...) combine.
absl::StatusOr<std::vector<std::string>> ExpandConfigOption(const std::vector<std::string>& args);

}  // namespace flint
