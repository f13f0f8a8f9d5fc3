// Uses an installed tiercache through find_package. Exits non-zero when the
// installed library does not behave.
#include <iostream>

#include "tiercache/cache.h"

int main() {
  tiercache::CacheOptions options;
  options.max_bytes = 1 << 20;
  absl::StatusOr<std::unique_ptr<tiercache::Cache>> cache = tiercache::Cache::Create(options);
  if (!cache.ok()) {
    std::cerr << "Create: " << cache.status() << "\n";
    return 1;
  }
  if (absl::Status s = (*cache)->Set("installed", "yes"); !s.ok()) {
    std::cerr << "Set: " << s << "\n";
    return 1;
  }
  std::optional<std::string> value = (*cache)->Get("installed");
  if (value != "yes") {
    std::cerr << "Get returned " << value.value_or("nothing") << ", expected yes\n";
    return 1;
  }
  std::cout << "installed tiercache works\n";
  return 0;
}
