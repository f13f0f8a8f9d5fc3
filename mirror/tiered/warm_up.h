// Warm-up from an old pool (docs/tiered.md, "Warm-up from an old pool"): an
// L2 miss reads the old pool; a hit fills L1 and is stored in the primary
// with `add` (a plain read) or over this replica's lease stub (a load), so
// that it never overwrites newer data there.

#ifndef TIERCACHE_MIRROR_TIERED_WARM_UP_H_
#define TIERCACHE_MIRROR_TIERED_WARM_UP_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "tiered/tiers.h"

namespace tiercache::mirror_internal {

class WarmUp {
 public:
  explicit WarmUp(Tiers& tiers) : tiers_(tiers) {}

  // The old pool's value for `key`, or nullopt when there is no old pool or
  // it does not have the key (a lease stub of clients still loading there
  // counts as not having it). With `lease_cas`, this replica holds the lease
  // stub in the primary and replaces it; otherwise the value is added.
  std::optional<std::string> FromOldPool(std::string_view key, std::optional<uint64_t> lease_cas);

 private:
  Tiers& tiers_;
};

}  // namespace tiercache::mirror_internal

#endif  // TIERCACHE_MIRROR_TIERED_WARM_UP_H_
