// The copy codec: how TieredCache keeps an L2 item in its L1.
//
// Every L1 entry a TieredCache writes is `Header + value`:
//
//   version     L2's CAS of the item this copy equals; or kPending | n: this
//               replica wrote the copy as the mirror's n-th write, which may
//               not have reached memcached yet; or 0: L2's CAS is unknown.
//   checked_ns  when (L1 clock) the copy was last known to equal L2's item.
//
// The header lives inside the L1 entry, so it is charged, evicted and expired
// with the value, and written atomically with it: no side table has to be
// kept in step with L1's evictions.

#ifndef TIERCACHE_MIRROR_TIERED_COPY_H_
#define TIERCACHE_MIRROR_TIERED_COPY_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/time/time.h"
#include "tiercache/types.h"

namespace tiercache::mirror_internal {

inline constexpr size_t kHeaderSize = 16;
inline constexpr uint64_t kPending = uint64_t{1} << 63;

struct CopyHeader {
  uint64_t version = 0;
  int64_t checked_ns = 0;
  bool pending() const { return (version & kPending) != 0; }
  // The mirror's sequence number of this replica's own write (pending only).
  uint64_t write_sequence() const { return version & ~kPending; }
  // The copy equals the L2 item with CAS `version`.
  bool cas_known() const { return version != 0 && !pending(); }
};

// An L1 entry, decoded.
struct Copy {
  CopyHeader header;
  std::string value;
  uint32_t flags = 0;
  uint64_t l1_cas = 0;  // the L1 entry's own CAS: replace or drop only this version
  absl::Time expiry;    // the L1 entry's
};

inline std::string EncodeCopy(const CopyHeader& header, std::string_view value) {
  std::string out(kHeaderSize + value.size(), '\0');
  std::memcpy(out.data(), &header.version, 8);
  std::memcpy(out.data() + 8, &header.checked_ns, 8);
  std::memcpy(out.data() + kHeaderSize, value.data(), value.size());
  return out;
}

// The header of an entry, or nullopt if the entry is too short to have one.
inline std::optional<CopyHeader> PeekHeader(std::string_view entry) {
  if (entry.size() < kHeaderSize) return std::nullopt;
  CopyHeader header;
  std::memcpy(&header.version, entry.data(), 8);
  std::memcpy(&header.checked_ns, entry.data() + 8, 8);
  return header;
}

inline std::optional<Copy> DecodeCopy(std::optional<Item> item) {
  if (!item.has_value()) return std::nullopt;
  std::optional<CopyHeader> header = PeekHeader(item->value);
  if (!header.has_value()) return std::nullopt;
  Copy copy;
  copy.header = *header;
  copy.value = std::move(item->value);
  copy.value.erase(0, kHeaderSize);
  copy.flags = item->flags;
  copy.l1_cas = item->cas;
  copy.expiry = item->expiry;
  return copy;
}

}  // namespace tiercache::mirror_internal

#endif  // TIERCACHE_MIRROR_TIERED_COPY_H_
