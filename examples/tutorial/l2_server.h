// Where the tutorial's L2 steps find memcached: the HOST:PORT given as the
// program's first argument, or else a private memcached that the program
// starts on a free loopback port and stops when it exits (the integration
// tests' helper). Nothing here is needed in an application, which simply
// names its memcached servers in MemcachedOptions::servers.

#ifndef TIERCACHE_EXAMPLES_TUTORIAL_L2_SERVER_H_
#define TIERCACHE_EXAMPLES_TUTORIAL_L2_SERVER_H_

#include <memory>
#include <string>

#include "memcached_server.h"

class TutorialMemcached {
 public:
  TutorialMemcached(int argc, char** argv) {
    if (argc > 1) {
      address_ = argv[1];
    } else {
      private_ = std::make_unique<tiercache::testing::MemcachedServer>();
      address_ = private_->address();
    }
  }
  const std::string& address() const { return address_; }
  bool ok() const { return private_ == nullptr || private_->running(); }

 private:
  std::unique_ptr<tiercache::testing::MemcachedServer> private_;
  std::string address_;
};

#endif  // TIERCACHE_EXAMPLES_TUTORIAL_L2_SERVER_H_
