// A small JSON layer for the shim: reading KubeVirt's documents (a VMI) with
// errors that name the JSON path of the offending value
// ("spec.domain.devices.disks[1].disk.bus: ..."), and writing the documents
// virt-handler reads back (domain, domain stats) with exact key names, key
// order and 64-bit integers.
//
// Input is parsed by protobuf's JSON parser into google::protobuf::Value
// (numbers become doubles: exact up to 2^53, which covers every number a
// VMI carries). Output is written by our own builder because protobuf prints
// a double for every number, and a uint64 counter above 2^53 would lose
// digits or come out in exponent form, which Go's json refuses for a uint64.
#pragma once

#include <google/protobuf/struct.pb.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace flint::shim::json {

// Parses any JSON text. INVALID_ARGUMENT ("WHAT is not valid JSON: ...")
// when it is not JSON.
absl::StatusOr<google::protobuf::Value> Parse(std::string_view text, std::string_view what);

// A read-only view of one value inside a parsed document, with its path.
// JSON null counts as absent (as Go's encoding/json treats it for pointers
// and omitempty fields). The document must outlive its nodes.
class Node {
 public:
  // The document's root; its path is empty.
  static Node Root(const google::protobuf::Value& document);

  const std::string& path() const { return path_; }
  // Present and not null.
  bool present() const;
  bool is_object() const;
  bool is_array() const;
  bool is_string() const;
  bool is_number() const;
  bool is_bool() const;
  // "an object", "a string", ... for messages.
  std::string_view kind_name() const;

  // A member. Absent (but with its path) when this node is absent, not an
  // object, or has no such member; the path reads "a.b", or a["x/y"] for a key
  // that is not a plain identifier.
  Node Get(std::string_view key) const;
  Node operator[](std::string_view key) const { return Get(key); }
  // Member names, sorted (messages and checks never depend on hash order).
  // Empty when absent; INVALID_ARGUMENT when present but not an object.
  absl::StatusOr<std::vector<std::string>> Keys() const;
  // Array elements (paths "a[0]", "a[1]", ...). Empty when absent;
  // INVALID_ARGUMENT when present but not an array.
  absl::StatusOr<std::vector<Node>> Items() const;

  // Typed reads: absent gives the default, a value of another type is
  // INVALID_ARGUMENT naming the path and both types.
  absl::StatusOr<std::string> String(std::string_view absent = "") const;
  absl::StatusOr<bool> Bool(bool absent = false) const;
  // A whole number in [min, max].
  absl::StatusOr<int64_t> Int(int64_t absent, int64_t min, int64_t max) const;
  // Present and a non-empty string.
  absl::StatusOr<std::string> RequiredString() const;
  // Absent, or an object (members unchecked).
  absl::Status ExpectObjectOrAbsent() const;

  // INVALID_ARGUMENT "PATH: message".
  absl::Status Error(std::string_view message) const;

 private:
  Node(const google::protobuf::Value* value, std::string path)
      : value_(value), path_(std::move(path)) {}
  absl::Status WrongType(std::string_view expected) const;

  const google::protobuf::Value* value_ = nullptr;  // null when absent
  std::string path_;
};

// JSON string literal for `s`, quotes included: '"' and '\' escaped, control
// characters as \u00XX; other bytes (UTF-8) pass through.
std::string Quote(std::string_view s);

// An output value under construction: an object (keys kept in insertion
// order), an array, or a scalar. Dump() writes compact JSON.
class Out {
 public:
  static Out Object();
  static Out Array();
  static Out Str(std::string_view s);
  static Out Bool(bool b);
  static Out Int(int64_t v);
  static Out Uint(uint64_t v);

  // Objects: adds a member, or replaces the value of an existing one.
  Out& Set(std::string_view key, Out value);
  // Arrays: appends.
  Out& Push(Out value);
  std::string Dump() const;

 private:
  enum class Kind { kScalar, kObject, kArray };
  explicit Out(Kind kind) : kind_(kind) {}
  void DumpTo(std::string* out) const;

  Kind kind_;
  std::string scalar_;             // kScalar: the JSON text
  std::vector<std::string> keys_;  // kObject: parallel to values_
  std::vector<Out> values_;        // kObject members, kArray elements
};

}  // namespace flint::shim::json
