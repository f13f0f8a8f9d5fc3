// GetMany and GetOrLoadMany: many keys in one pipelined L2 round trip per
// server, and one loader call for the keys missing from both tiers.
//
//   L1: servable copies ................... answered (l1_hits)
//   the rest, one FetchMany (mg ... v [N]):
//     a value ............................. fills L1; a stale copy among them
//                                           is revalidated by value in the
//                                           same round trip (unchanged/changed)
//     not there (Get) ..................... the old pool, key by key; a stale
//                                           copy is dropped (gone)
//     a stub with W (GetOrLoad) ........... this replica holds the key's lease:
//                                           the old pool, else the bulk load
//     a stub with Z (GetOrLoad) ........... another replica loads it: polled
//                                           with FetchMany on the Clock until a
//                                           value appears or lease_wait passes
//     L2 unreachable ...................... stale copies served; GetMany
//                                           omits the rest, GetOrLoadMany loads
//                                           them (and replicates)
//   one loader call for every key leased or unreachable; a second one only
//   for keys whose lease holder did not store within lease_wait (or died).
//
// Single flight is per key and does not compose with batches: two bulk
// calls for one key in one process are coordinated by the lease instead
// (the second waits on the first's stub).

#ifndef TIERCACHE_MIRROR_TIERED_BULK_READER_H_
#define TIERCACHE_MIRROR_TIERED_BULK_READER_H_

#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "tiercache/tiered_cache.h"
#include "tiered/lease_loader.h"
#include "tiered/tiers.h"
#include "tiered/warm_up.h"

namespace tiercache::mirror_internal {

class BulkReader {
 public:
  BulkReader(Tiers& tiers, WarmUp& warm_up, LeaseLoader& leases)
      : tiers_(tiers), warm_up_(warm_up), leases_(leases) {}

  // REQUIRES: every key passed Tiers::CheckKey.
  absl::StatusOr<absl::flat_hash_map<std::string, std::string>> GetMany(
      absl::Span<const std::string_view> keys, const BulkLoader* loader,
      const WriteOptions& options);

 private:
  // A key that L1 could not answer.
  struct Pending {
    std::string_view key;
    std::optional<Copy> copy;  // a stale copy, if L1 had one (until it is dropped)
    uint64_t lease_cas = 0;    // the stub this replica holds or waits on
    bool had_copy = false;     // then the old pool may not answer: the key was in the new one
  };
  using Values = absl::flat_hash_map<std::string, std::string>;

  // Applies one FetchMany answer to `p`: answered (into `out`), a miss, or
  // decided by a lease (won: it joins `leased`; lost: it joins `waiting`).
  void Apply(Pending& p, Fetched& r, int64_t asked_ns, bool leasing, Values* out,
             std::vector<Pending>* leased, std::vector<Pending>* waiting);
  // One loader call for `keys`; stores each value over its lease (or, with
  // no lease, replicates it) and adds it to `out`. Keys the loader leaves out
  // release their lease.
  absl::Status LoadAndStore(std::vector<Pending>& keys, const BulkLoader& loader,
                            const WriteOptions& options, Values* out);

  Tiers& tiers_;
  WarmUp& warm_up_;
  LeaseLoader& leases_;
};

}  // namespace tiercache::mirror_internal

#endif  // TIERCACHE_MIRROR_TIERED_BULK_READER_H_
