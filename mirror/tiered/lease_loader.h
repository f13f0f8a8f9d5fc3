// One loader call per missing key across replicas: memcached leases
// (docs/tiered.md, "One loader across replicas: leases").
//
//   mg <key> v N<lease_ttl> [R<refresh_ahead>]
//     a value .................. served, fills L1
//     a value with W ........... early refresh: this replica reloads and
//                                stores over it (CAS); others keep the value
//     a stub with W ............ lease won: warm-up, else load and store over
//                                the stub (CAS); a failed load deletes the stub
//     a stub with Z ............ another replica loads: poll with backoff
//                                (1 ms doubling to 50 ms, on the Clock) until
//                                a value appears or lease_wait passes, then load
//     L2 unreachable ........... load (and replicate); inside an early-refresh
//                                window, serve the current copy instead
//
// A value stored over a lease replaces only the item with the lease's CAS:
// if anyone wrote the key meanwhile, their value stays and L1 keeps neither.

#ifndef TIERCACHE_MIRROR_TIERED_LEASE_LOADER_H_
#define TIERCACHE_MIRROR_TIERED_LEASE_LOADER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "tiercache/tiered_cache.h"
#include "tiered/tiers.h"
#include "tiered/warm_up.h"

namespace tiercache::mirror_internal {

class LeaseLoader {
 public:
  LeaseLoader(Tiers& tiers, WarmUp& warm_up) : tiers_(tiers), warm_up_(warm_up) {}

  // L2 with a lease, then the loader. `current`: the stale L1 copy inside an
  // early-refresh window (served if L2 cannot answer, replaced by the
  // reload). `warm_up`: the old pool may answer a miss.
  absl::StatusOr<std::string> Load(std::string_view key, const Loader& loader,
                                   const WriteOptions& options, const LoadOptions& load,
                                   Copy* current, bool warm_up);

  // Calls the loader and checks that both tiers can hold its value.
  absl::StatusOr<std::string> CallLoader(std::string_view key, const Loader& loader,
                                         const WriteOptions& options);

  // Stores a loaded value over the item (or stub) whose CAS is `cas`, and
  // fills L1 (replacing `replacing`, if set) when memcached took it.
  void StoreOver(std::string_view key, std::string_view value, const WriteOptions& options,
                 uint64_t cas, std::optional<uint64_t> replacing);
  // The loader failed: delete the stub, so that waiting replicas need not
  // wait out the lease (the next one to ask wins a new lease and loads).
  void ReleaseLease(std::string_view key, uint64_t cas);

 private:
  Tiers& tiers_;
  WarmUp& warm_up_;
};

}  // namespace tiercache::mirror_internal

#endif  // TIERCACHE_MIRROR_TIERED_LEASE_LOADER_H_
