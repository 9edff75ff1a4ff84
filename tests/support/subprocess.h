// Runs a program for a test: arguments, optional stdin bytes, a time limit
// (SIGKILL after it), an optional stdout text after which the program is sent
// SIGTERM (for guests that would otherwise run on), and its stdout, stderr and exit status.
#pragma once

#include <string>
#include <vector>

namespace flint::testing {

struct ProcessResult {
  int exit_status = -1;   // valid when exited
  bool exited = false;    // false: killed by a signal (or by the time limit)
  bool timed_out = false;
  bool stopped = false;   // SIGTERM sent because stdout showed stop_when
  std::string out;
  std::string err;
};

ProcessResult RunProcess(const std::vector<std::string>& argv, const std::string& stdin_data = "",
                         int timeout_ms = 60000, const std::string& stop_when = "");

// "exit status N (timed out) (killed by a signal)" plus both output streams,
// for assertion messages.
std::string Describe(const ProcessResult& r);

// True when /dev/kvm can be opened read-write by this process.
bool KvmAvailable(std::string* why);

}  // namespace flint::testing
