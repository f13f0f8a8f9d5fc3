// Tutorial step 1: create a cache, write, read, delete. See docs/tutorial.md.

#include <iostream>

#include "check.h"
#include "tiercache/cache.h"

int main() {
  tiercache::CacheOptions options;
  options.max_bytes = 16 << 20;  // 16 MiB for keys, values and per-entry overhead
  absl::StatusOr<std::unique_ptr<tiercache::Cache>> created = tiercache::Cache::Create(options);
  TUTORIAL_CHECK(created.ok());
  tiercache::Cache& cache = **created;

  // Set stores unconditionally; Get copies the value out, or returns nullopt.
  TUTORIAL_CHECK(cache.Set("greeting", "hello").ok());
  std::optional<std::string> value = cache.Get("greeting");
  TUTORIAL_CHECK(value == "hello");
  TUTORIAL_CHECK(!cache.Get("nobody").has_value());  // a miss is not an error

  // Every entry carries 32-bit client flags and a CAS version; GetItem shows them.
  tiercache::WriteOptions as_json;
  as_json.flags = 16;  // the meaning of flags is up to the application
  TUTORIAL_CHECK(cache.Set("config", "{\"debug\":false}", as_json).ok());
  std::optional<tiercache::Item> item = cache.GetItem("config");
  TUTORIAL_CHECK(item.has_value() && item->flags == 16);
  std::cout << "config: " << item->value << " (flags " << item->flags << ", cas " << item->cas
            << ")\n";

  // Add only creates, Replace only overwrites: memcached's vocabulary.
  TUTORIAL_CHECK(*cache.Add("greeting", "hi") == tiercache::StoreResult::kNotStored);
  TUTORIAL_CHECK(*cache.Replace("greeting", "hi") == tiercache::StoreResult::kStored);
  TUTORIAL_CHECK(*cache.Replace("nobody", "hi") == tiercache::StoreResult::kNotStored);

  // Invalidation: Delete says whether the key was there.
  TUTORIAL_CHECK(cache.Delete("greeting"));
  TUTORIAL_CHECK(!cache.Delete("greeting"));

  // Bad input is an InvalidArgument that names the limit; nothing is stored.
  absl::Status too_long = cache.Set(std::string(300, 'k'), "v");
  TUTORIAL_CHECK(absl::IsInvalidArgument(too_long));
  std::cout << "a 300-byte key: " << too_long.message() << "\n";
  return 0;
}
