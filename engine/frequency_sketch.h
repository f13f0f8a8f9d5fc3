// How often each key was asked for lately, approximately: the admission
// filter of W-TinyLFU (Einziger, Friedman, Manes, "TinyLFU: A Highly
// Efficient Cache Admission Policy", ACM TOS 2017), laid out as Caffeine's
// FrequencySketch is.
//
// A count-min sketch of 4-bit counters: a key has one counter in each of four
// rows, an increment raises each of them (saturating at 15) and the estimate
// is the smallest. Collisions only ever raise an estimate. Sixteen counters
// share a 64-bit word, and a key's four counters are all in one 64-byte block
// (two words per row), so an increment or an estimate touches one cache line.
//
// Aging: after `sample_size` increments (10 per entry the sketch is sized
// for, that size rounded up to a power of two; Caffeine uses 10 per maximum
// entry, unrounded, which replayed 0.06 points lower on the LIRS traces'
// mean) every counter is halved, so the sketch tracks recent popularity
// rather than all-time counts.
//
// Size: one word, 16 counters, per entry the sketch is sized for (a power of
// two): 8 bytes per entry. Resize clears it.
//
// Hashes come from the caller (SketchHash of the key) and are mixed with a
// per-cache seed, so which keys collide cannot be chosen by someone who only
// knows the keys. Not thread-safe: a stripe uses it under its lock.

#ifndef TIERCACHE_ENGINE_FREQUENCY_SKETCH_H_
#define TIERCACHE_ENGINE_FREQUENCY_SKETCH_H_

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace tiercache::engine_internal {

class FrequencySketch {
 public:
  static constexpr int kMaxFrequency = 15;
  static constexpr size_t kMinEntries = 64;
  static constexpr size_t kSamplesPerEntry = 10;

  explicit FrequencySketch(uint64_t seed) : seed_(seed) { Resize(kMinEntries); }

  // Sizes the sketch for about `entries` keys and clears it.
  void Resize(size_t entries) {
    const size_t words = std::bit_ceil(std::max(entries, kMinEntries));
    std::vector<Block>(words / kBlockWords).swap(blocks_);  // assign() would keep the memory
    block_mask_ = blocks_.size() - 1;
    sample_size_ = kSamplesPerEntry * words;
    additions_ = 0;
  }

  // The entries it is sized for.
  size_t capacity() const { return blocks_.size() * kBlockWords; }
  size_t bytes() const { return blocks_.size() * sizeof(Block); }
  // Increments counted since the last halving.
  size_t additions() const { return additions_; }
  size_t sample_size() const { return sample_size_; }

  // Counts one request for the key with `hash`.
  void Increment(uint64_t hash) {
    const Slots slots = SlotsOf(hash);
    bool added = false;
    for (int row = 0; row < kRows; ++row) {
      uint64_t& word = slots.block->words[slots.word[row]];
      const int shift = slots.shift[row];
      if (((word >> shift) & 0xf) != kMaxFrequency) {
        word += uint64_t{1} << shift;
        added = true;
      }
    }
    // Saturated counters are not counted: a hot key cannot hurry the aging.
    if (added && ++additions_ >= sample_size_) Halve();
  }

  // Starts fetching the key's block, for an Increment or Frequency soon.
  void Prefetch(uint64_t hash) const { __builtin_prefetch(SlotsOf(hash).block, /*rw=*/1); }

  // The key's estimated count, 0..15.
  int Frequency(uint64_t hash) const {
    const Slots slots = SlotsOf(hash);
    int frequency = kMaxFrequency;
    for (int row = 0; row < kRows; ++row) {
      frequency = std::min(
          frequency,
          static_cast<int>((slots.block->words[slots.word[row]] >> slots.shift[row]) & 0xf));
    }
    return frequency;
  }

 private:
  static constexpr int kRows = 4;
  static constexpr size_t kBlockWords = 8;  // 64 bytes: two words per row

  // Aligned, so that a block is one cache line (a plain vector of words
  // starts 16 bytes into a line, and most blocks would straddle two).
  struct alignas(64) Block {
    uint64_t words[kBlockWords];
  };

  struct Slots {
    Block* block;
    int word[kRows];  // in the block
    int shift[kRows];
  };

  // SplitMix64's finalizer: every input bit moves every output bit.
  static uint64_t Mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9;
    x ^= x >> 27;
    x *= 0x94d049bb133111eb;
    x ^= x >> 31;
    return x;
  }

  Slots SlotsOf(uint64_t hash) const {
    const uint64_t mixed = Mix(hash ^ seed_);
    // The low half picks the block; the high half, per row, a word of the
    // row's two and a counter of its sixteen.
    const auto counters = static_cast<uint32_t>(mixed >> 32);
    Slots slots;
    slots.block = const_cast<Block*>(&blocks_[static_cast<size_t>(mixed) & block_mask_]);
    for (int row = 0; row < kRows; ++row) {
      const uint32_t h = counters >> (row * 8);
      slots.word[row] = row * 2 + static_cast<int>(h & 1);
      slots.shift[row] = static_cast<int>((h >> 1) & 15) * 4;
    }
    return slots;
  }

  // Halves every counter. The increments kept are halved too, less the
  // half-units the odd counters lost (as Caffeine does), so the next halving
  // comes after as many new increments as the first.
  void Halve() {
    size_t odd = 0;
    for (Block& block : blocks_) {
      for (uint64_t& word : block.words) {
        odd += static_cast<size_t>(std::popcount(word & 0x1111111111111111));
        word = (word >> 1) & 0x7777777777777777;
      }
    }
    additions_ = (additions_ - odd / 4) / 2;
  }

  const uint64_t seed_;
  std::vector<Block> blocks_;
  size_t block_mask_ = 0;
  size_t sample_size_ = 0;
  size_t additions_ = 0;
};

}  // namespace tiercache::engine_internal

#endif  // TIERCACHE_ENGINE_FREQUENCY_SKETCH_H_
