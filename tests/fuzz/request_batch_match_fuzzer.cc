// libFuzzer harness for RequestBatch::Match: whatever a server (or a broken
// one, or a stream out of step) sends, no response is used for a request it
// does not answer. The fuzzer picks a batch and a response stream; every
// response Match accepts is checked against an oracle written from the
// contract in meta_protocol.h, not from the code:
//   - it answers a request of the batch, later than the last one answered,
//     and every request it skips is quiet (a quiet success sends nothing);
//   - a tagged response echoes that request's token and has a code that
//     request can answer; for a get or an arithmetic request its echoed key
//     decodes (base64 if `b`) to exactly the raw prefix + key asked for;
//   - an error line answers the oldest unanswered request if it is loud, and
//     is untagged only inside a run of quiet requests or at the end marker;
//   - the end marker's answer (kEndOfBatch) is EN or HD with its token, once
//     every loud request has answered; MN is never accepted;
//   - a classic gets is answered only when it is the oldest unanswered
//     request: by VALUEs for keys of its list, each after the previous one
//     in the list (key_index names it), then by END (kEndOfList);
//   - kComplete comes exactly when nothing is due.
// Refusals must be DataLoss. Matching stops at the first refusal or at
// kComplete, as a connection does.
//
// Input (missing bytes read as 0):
//   byte 0      first opaque token: 0..127 as is; 128..255 just below 2^64
//               (the batch's last token still fits in 64 bits)
//   byte 1      bits 0-2: number of requests - 1; bit 3: end with the marker
//   byte 2      prefix length (mod 16), then the prefix
//   per request an op byte, a key length byte, then the key:
//               op bits 0-1: get, set, delete, arithmetic; bit 2: quiet;
//               bit 3: a get without the value (v), a decrement;
//               bit 4: a get with N (vivify), a set or delete with C;
//               bit 5: a get is a classic gets of the key, key + "1" and
//               key + "2" (when the key needs no base64)
//   the rest    the response stream
// A key EncodeKey refuses (empty, too long) drops its request.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "fuzz_support.h"
#include "protocol/meta_protocol.h"

namespace tiercache::mirror_internal {
namespace {

using Code = Response::Code;
using Progress = RequestBatch::Progress;

constexpr size_t kMaxValueSize = 4096;

[[noreturn]] void Fail(std::string_view what) { fuzz::FailIn("request_batch_match_fuzzer", what); }

using fuzz::Escaped;
using fuzz::Input;

// What the harness asked for, kept apart from the batch.
struct Sent {
  Command command;
  bool value;  // the answer to a hit carries the value: VA rather than HD
  bool quiet;
  std::string raw_key;                 // prefix + key: what an echoed key must decode to
  std::vector<std::string> list = {};  // a classic gets: its keys as sent
  size_t next_index = 0;               // the first key of `list` a VALUE may name
};

// The codes memcached 1.6.18 answers each request with; a quiet request
// hides its success (EN for a get, HD for a store or a delete).
bool CanAnswer(const Sent& r, Code code) {
  switch (r.command) {
    case Command::kGet:
      return code == (r.value ? Code::kValue : Code::kHit) || (!r.quiet && code == Code::kMiss);
    case Command::kSet:
      return code == Code::kNotStored || code == Code::kExists || code == Code::kNotFound ||
             (!r.quiet && code == Code::kHit);
    case Command::kDelete:
      return code == Code::kNotFound || code == Code::kExists || (!r.quiet && code == Code::kHit);
    case Command::kArithmetic:
      return code == Code::kValue || code == Code::kNotFound || code == Code::kNotStored ||
             code == Code::kExists;
    case Command::kEndMarker:  // a get of a key nobody stores, without v
      return code == Code::kMiss || code == Code::kHit;
    case Command::kMultiGet:  // VALUE and END only, checked apart
    case Command::kFlushAll:  // OK only, checked apart
      return false;
  }
  return false;
}

void FuzzOneInput(std::string_view bytes) {
  Input input(bytes);
  const uint8_t opaque_choice = input.Byte();
  const uint64_t first_opaque =
      opaque_choice < 128
          ? opaque_choice
          : std::numeric_limits<uint64_t>::max() - 8 - static_cast<uint64_t>(opaque_choice - 128);
  const uint8_t shape = input.Byte();
  const size_t request_count = 1 + (shape & 7);
  const bool end_with_marker = (shape & 8) != 0;
  const std::string_view prefix = input.Bytes(input.Byte() % 16);

  RequestBatch batch(first_opaque);
  std::vector<Sent> sent;
  for (size_t n = 0; n < request_count; ++n) {
    const uint8_t op = input.Byte();
    const std::string_view key = input.Bytes(input.Byte());
    absl::StatusOr<WireKey> wire = EncodeKey(prefix, key);
    if (!wire.ok()) continue;
    Sent r{Command::kGet, true, (op & 4) != 0, std::string(prefix) + std::string(key)};
    switch (op & 3) {
      case 0: {
        if ((op & 64) != 0 && (op & 32) != 0) {
          r.command = Command::kFlushAll;
          r.quiet = false;
          batch.FlushAll();
          break;
        }
        if ((op & 32) != 0) {
          if (wire->base64) continue;
          std::vector<WireKey> keys = {*wire};
          for (const char* suffix : {"1", "2"}) {
            absl::StatusOr<WireKey> more = EncodeKey(prefix, std::string(key) + suffix);
            if (!more.ok() || more->base64) break;
            keys.push_back(*std::move(more));
          }
          r.command = Command::kMultiGet;
          r.quiet = false;
          for (const WireKey& k : keys) r.list.push_back(k.text);
          batch.MultiGet(keys);
          break;
        }
        GetRequest get;
        get.value = (op & 8) == 0;
        if ((op & 16) != 0) get.vivify_ttl = 30;
        r.value = get.value;
        batch.Get(*wire, get, r.quiet);
        break;
      }
      case 1: {
        SetRequest set;
        set.value = "v";
        if ((op & 16) != 0) set.compare_cas = 7;
        r.command = Command::kSet;
        batch.Set(*wire, set, r.quiet);
        break;
      }
      case 2: {
        DeleteRequest del;
        if ((op & 16) != 0) del.compare_cas = 7;
        r.command = Command::kDelete;
        batch.Delete(*wire, del, r.quiet);
        break;
      }
      case 3: {
        ArithmeticRequest arithmetic;
        arithmetic.increment = (op & 8) == 0;
        r.command = Command::kArithmetic;
        r.quiet = false;  // never quiet
        batch.Arithmetic(*wire, arithmetic);
        break;
      }
    }
    sent.push_back(std::move(r));
  }
  if (sent.empty()) return;
  if (batch.size() != sent.size()) Fail("the batch lost a request");
  const size_t requests = sent.size();
  if (end_with_marker) {
    batch.EndWithMarker();
    if (batch.size() != requests) Fail("the end marker counts in batch.size()");
    sent.push_back(Sent{Command::kEndMarker, false, false, ""});
  }

  ResponseParser parser(kMaxValueSize);
  parser.Feed(input.rest());
  size_t due = 0;  // requests before it have answered or were skipped quietly
  const auto loud_before = [&](size_t end) {
    for (size_t i = due; i < end; ++i) {
      if (!sent[i].quiet) return true;
    }
    return false;
  };
  while (true) {
    absl::StatusOr<std::optional<Response>> next = parser.Next();
    if (!next.ok() || !next->has_value()) return;
    Response response = std::move(**next);
    const Code code = response.code;
    absl::StatusOr<Progress> progress = batch.Match(&response);
    if (!progress.ok()) {
      // memcached -Y's refusal of an unauthenticated connection is the one
      // refusal that is not DataLoss.
      const bool unauthenticated =
          code == Code::kClientError && response.message == "unauthenticated";
      if (unauthenticated != (progress.status().code() == absl::StatusCode::kPermissionDenied) ||
          (!unauthenticated && progress.status().code() != absl::StatusCode::kDataLoss)) {
        Fail(absl::StrCat("a refusal that is not DataLoss: ", progress.status().ToString()));
      }
      return;
    }

    if (code == Code::kNoop) Fail("MN accepted");
    if (IsErrorLine(code) && !IsInStepError(response)) {
      Fail(absl::StrCat("an error line that shows a desync accepted: ", Escaped(response.message)));
    }

    const size_t i = response.request;
    if (i == Response::kUntagged) {
      if (!IsErrorLine(code)) Fail("an untagged response that is not an error line");
      if (due >= sent.size()) Fail("an error line accepted with nothing due");
      if (sent[due].command == Command::kEndMarker) {
        ++due;  // the marker's answer: the batch fails as a whole
      } else if (!sent[due].quiet) {
        Fail(absl::StrCat("an untagged error line where request ", due, " must answer"));
      }
    } else if (code == Code::kOk) {
      if (due >= requests || sent[due].command != Command::kFlushAll) {
        Fail("OK accepted where no flush_all was due");
      }
      if (i != due) Fail(absl::StrCat("an OK given to request ", i, " while ", due, " is due"));
      ++due;
    } else if (code == Code::kClassicValue || code == Code::kEnd) {
      if (due >= requests || sent[due].command != Command::kMultiGet) {
        Fail("a classic answer accepted where no gets was due");
      }
      Sent& r = sent[due];
      if (code == Code::kEnd) {
        if (i != Response::kEndOfList) Fail("END not marked as the end of a list");
        ++due;
      } else {
        if (i != due) Fail(absl::StrCat("a VALUE given to request ", i, " while ", due, " is due"));
        if (response.key_index < r.next_index || response.key_index >= r.list.size()) {
          Fail(absl::StrCat("a VALUE at list index ", response.key_index, " (next allowed ",
                            r.next_index, ")"));
        }
        if (response.key != r.list[response.key_index]) {
          Fail(absl::StrCat("a VALUE for \"", Escaped(response.key), "\" given to key \"",
                            Escaped(r.list[response.key_index]), "\""));
        }
        if (!response.cas.has_value()) Fail("a VALUE without a CAS accepted for a gets");
        r.next_index = response.key_index + 1;
      }
    } else if (i == Response::kEndOfBatch) {
      if (!end_with_marker) Fail("an end of batch without the marker");
      if (loud_before(requests)) Fail("the end of the batch before a loud request answered");
      if (code != Code::kMiss && code != Code::kHit) {
        Fail(absl::StrCat("code ", static_cast<int>(code), " accepted for the end marker"));
      }
      if (response.opaque != first_opaque + requests) {
        Fail(absl::StrCat("the end marker answered by token ", response.opaque.value_or(0)));
      }
      due = sent.size();
    } else {
      if (i >= requests) Fail(absl::StrCat("response for request ", i, " of ", requests));
      if (i < due) Fail(absl::StrCat("request ", i, " answered again (", due, " is due)"));
      if (loud_before(i)) Fail(absl::StrCat("request ", i, " answered before a loud one"));
      const Sent& r = sent[i];
      if (IsErrorLine(code)) {
        if (i != due || r.quiet) Fail("an error line given to a request not due or quiet");
      } else {
        if (response.opaque != first_opaque + i) {
          Fail(absl::StrCat("request ", i, " answered by token ", response.opaque.value_or(0)));
        }
        if (!CanAnswer(r, code)) {
          Fail(absl::StrCat("code ", static_cast<int>(code), " accepted for request ", i));
        }
        if (r.command == Command::kGet || r.command == Command::kArithmetic) {
          std::string echoed = response.key;
          if (response.key_base64 && !absl::Base64Unescape(response.key, &echoed)) {
            Fail(absl::StrCat("an undecodable key echo accepted: ", Escaped(response.key)));
          }
          if (echoed != r.raw_key) {
            Fail(absl::StrCat("request ", i, " for key \"", Escaped(r.raw_key),
                              "\" answered for key \"", Escaped(echoed), "\""));
          }
        }
      }
      due = i + 1;
    }

    const bool nothing_due = due == sent.size();
    if ((*progress == Progress::kComplete) != nothing_due) {
      Fail(absl::StrCat("progress ", *progress == Progress::kComplete ? "complete" : "more",
                        " with ", due, " of ", sent.size(), " requests (and marker) done"));
    }
    if (*progress == Progress::kComplete) return;
  }
}

}  // namespace
}  // namespace tiercache::mirror_internal

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tiercache::mirror_internal::FuzzOneInput(
      std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
