// Revalidation: a stale L1 copy checked against L2 (docs/tiered.md, "The
// read path").
//
//   copy with a known CAS:  mg <key> c (no value)
//       same CAS ........... restamped, served             (unchanged)
//       not there .......... dropped                       (gone)
//       other CAS .......... then as below
//   mg <key> v
//       a value ............ replaces the copy              (changed, or unchanged
//                                                           when a copy of unknown
//                                                           version equals it)
//       not there / stub ... dropped                       (gone)
//   L2 unreachable ......... the copy is served            (counted in l2_errors)

#ifndef TIERCACHE_MIRROR_TIERED_REVALIDATOR_H_
#define TIERCACHE_MIRROR_TIERED_REVALIDATOR_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "tiered/copy.h"
#include "tiered/tiers.h"

namespace tiercache::mirror_internal {

class Revalidator {
 public:
  explicit Revalidator(Tiers& tiers) : tiers_(tiers) {}

  // The answer to serve, or nullopt when the key is gone from L2 (the copy
  // has been dropped).
  std::optional<absl::StatusOr<std::string>> Revalidate(std::string_view key, Copy& copy);

 private:
  absl::StatusOr<Fetched> FetchCounted(std::string_view key, const FetchOptions& options);
  std::nullopt_t Gone(std::string_view key, const Copy& copy);

  Tiers& tiers_;
};

}  // namespace tiercache::mirror_internal

#endif  // TIERCACHE_MIRROR_TIERED_REVALIDATOR_H_
