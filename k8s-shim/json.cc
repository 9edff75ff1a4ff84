#include "k8s-shim/json.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace flint::shim::json {
namespace {

using google::protobuf::Value;

// This abseil's string_view is its own type, not std::string_view.
absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool IsIdentifier(std::string_view key) {
  if (key.empty()) return false;
  for (size_t i = 0; i < key.size(); ++i) {
    const char c = key[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return true;
}

std::string MemberPath(const std::string& parent, std::string_view key) {
  if (!IsIdentifier(key)) return absl::StrCat(parent, "[", Quote(key), "]");
  if (parent.empty()) return std::string(key);
  return absl::StrCat(parent, ".", A(key));
}

}  // namespace

// protobuf's JSON parser slows down steeply with nesting (seconds at a few
// thousand levels, tens of seconds beyond) and fails at ~50 nested objects
// with a message nobody can act on. Nothing KubeVirt sends nests deeper than
// a dozen levels (managedFields included), so deeper input is refused before
// it is parsed.
static constexpr int kMaxJsonDepth = 32;

static absl::Status CheckDepth(std::string_view text, std::string_view what) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxJsonDepth) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s nests objects and arrays more than %d levels deep (at byte %u); refused",
            what, kMaxJsonDepth, i));
      }
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Value> Parse(std::string_view text, std::string_view what) {
  if (absl::Status s = CheckDepth(text, what); !s.ok()) return s;
  Value v;
  const auto st = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(text.data(), text.size()), &v);
  if (!st.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s is not valid JSON: %s", what, st.message().as_string()));
  }
  return v;
}

Node Node::Root(const Value& document) { return Node(&document, ""); }

bool Node::present() const {
  return value_ != nullptr && value_->kind_case() != Value::kNullValue &&
         value_->kind_case() != Value::KIND_NOT_SET;
}
bool Node::is_object() const { return present() && value_->has_struct_value(); }
bool Node::is_array() const { return present() && value_->has_list_value(); }
bool Node::is_string() const { return present() && value_->kind_case() == Value::kStringValue; }
bool Node::is_number() const { return present() && value_->kind_case() == Value::kNumberValue; }
bool Node::is_bool() const { return present() && value_->kind_case() == Value::kBoolValue; }

std::string_view Node::kind_name() const {
  if (!present()) return "absent";
  switch (value_->kind_case()) {
    case Value::kStructValue: return "an object";
    case Value::kListValue: return "an array";
    case Value::kStringValue: return "a string";
    case Value::kNumberValue: return "a number";
    case Value::kBoolValue: return "a boolean";
    default: return "null";
  }
}

Node Node::Get(std::string_view key) const {
  std::string path = MemberPath(path_, key);
  if (!is_object()) return Node(nullptr, std::move(path));
  const auto& fields = value_->struct_value().fields();
  auto it = fields.find(std::string(key));
  return Node(it == fields.end() ? nullptr : &it->second, std::move(path));
}

absl::StatusOr<std::vector<std::string>> Node::Keys() const {
  std::vector<std::string> keys;
  if (!present()) return keys;
  if (!is_object()) return WrongType("an object");
  for (const auto& [k, unused] : value_->struct_value().fields()) keys.push_back(k);
  std::sort(keys.begin(), keys.end());
  return keys;
}

absl::StatusOr<std::vector<Node>> Node::Items() const {
  std::vector<Node> items;
  if (!present()) return items;
  if (!is_array()) return WrongType("an array");
  const auto& list = value_->list_value().values();
  for (int i = 0; i < list.size(); ++i) {
    items.push_back(Node(&list.Get(i), absl::StrCat(path_, "[", i, "]")));
  }
  return items;
}

absl::StatusOr<std::string> Node::String(std::string_view absent) const {
  if (!present()) return std::string(absent);
  if (!is_string()) return WrongType("a string");
  return value_->string_value();
}

absl::StatusOr<bool> Node::Bool(bool absent) const {
  if (!present()) return absent;
  if (!is_bool()) return WrongType("true or false");
  return value_->bool_value();
}

absl::StatusOr<int64_t> Node::Int(int64_t absent, int64_t min, int64_t max) const {
  if (!present()) return absent;
  if (!is_number()) return WrongType("a whole number");
  const double d = value_->number_value();
  // 2^63 bounds the cast below; callers' ranges are far inside it.
  if (std::floor(d) != d || std::fabs(d) >= 9.2e18) {
    return Error(absl::StrFormat("expected a whole number, got %g", d));
  }
  const int64_t v = static_cast<int64_t>(d);
  if (v < min || v > max) {
    return Error(absl::StrFormat("%d is out of range %d..%d", v, min, max));
  }
  return v;
}

absl::StatusOr<std::string> Node::RequiredString() const {
  if (!present()) return Error("is required");
  absl::StatusOr<std::string> s = String();
  if (s.ok() && s->empty()) return Error("must not be empty");
  return s;
}

absl::Status Node::ExpectObjectOrAbsent() const {
  if (present() && !is_object()) return WrongType("an object");
  return absl::OkStatus();
}

absl::Status Node::Error(std::string_view message) const {
  return absl::InvalidArgumentError(
      absl::StrCat(path_.empty() ? "(document)" : path_, ": ", A(message)));
}

absl::Status Node::WrongType(std::string_view expected) const {
  return Error(absl::StrCat("expected ", A(expected), ", got ", A(kind_name())));
}

std::string Quote(std::string_view s) {
  std::string out = "\"";
  out.reserve(s.size() + 2);
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<unsigned>(c));
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

Out Out::Object() { return Out(Kind::kObject); }
Out Out::Array() { return Out(Kind::kArray); }

Out Out::Str(std::string_view s) {
  Out o(Kind::kScalar);
  o.scalar_ = Quote(s);
  return o;
}
Out Out::Bool(bool b) {
  Out o(Kind::kScalar);
  o.scalar_ = b ? "true" : "false";
  return o;
}
Out Out::Int(int64_t v) {
  Out o(Kind::kScalar);
  o.scalar_ = absl::StrCat(v);
  return o;
}
Out Out::Uint(uint64_t v) {
  Out o(Kind::kScalar);
  o.scalar_ = absl::StrCat(v);
  return o;
}

Out& Out::Set(std::string_view key, Out value) {
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (keys_[i] == key) {
      values_[i] = std::move(value);
      return *this;
    }
  }
  keys_.emplace_back(key);
  values_.push_back(std::move(value));
  return *this;
}

Out& Out::Push(Out value) {
  values_.push_back(std::move(value));
  return *this;
}

std::string Out::Dump() const {
  std::string out;
  DumpTo(&out);
  return out;
}

void Out::DumpTo(std::string* out) const {
  switch (kind_) {
    case Kind::kScalar:
      *out += scalar_;
      return;
    case Kind::kObject:
      *out += '{';
      for (size_t i = 0; i < keys_.size(); ++i) {
        if (i > 0) *out += ',';
        *out += Quote(keys_[i]);
        *out += ':';
        values_[i].DumpTo(out);
      }
      *out += '}';
      return;
    case Kind::kArray:
      *out += '[';
      for (size_t i = 0; i < values_.size(); ++i) {
        if (i > 0) *out += ',';
        values_[i].DumpTo(out);
      }
      *out += ']';
      return;
  }
}

}  // namespace flint::shim::json
