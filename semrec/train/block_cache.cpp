// A bounded caching allocator for PyTorch's CPU tensors (issue 20, "kernel time").
//
// Why: a training step allocates and frees the same multi-megabyte activations every step. Served by glibc, each
// of them is either an mmapped block (unmapped when freed: the next step's copy faults in fresh pages that the
// kernel zero-fills, 20-60% of a step's CPU time) or a heap block (kept resident, but the heap fragments under the
// step's varying shapes and resident memory grows without bound: 3.6 -> 7.9 GiB over 120 CCFRec steps).
// This allocator keeps the memory of freed tensors of 1 MiB and more mapped and hands it to later requests, as
// PyTorch's CUDA caching allocator does for GPU memory (c10/cuda/CUDACachingAllocator.cpp: best fit, block
// splitting, coalescing of free neighbours), within a limit on the bytes it maps (in use plus free).
//
// Requests are rounded to size classes (four per power of two). Two pools:
// - large (classes of 2 MiB and more): free memory is kept as extents (address ranges). A request takes the
//   smallest free extent that holds it (best fit) and splits off what it does not need; a freed block merges with
//   free neighbours that are contiguous in the address space. So the free memory serves any size up to its largest
//   extent, not only the sizes that were freed: a step whose tensors change size a little (a batch's position
//   count) does not miss for want of a block of exactly its class.
// - small (1-2 MiB): whole blocks, reused by a request of their class or one at most half a class smaller.
// A request nothing free can hold maps a new block. Before that, free memory is unmapped while the bytes mapped
// would exceed the limit: the smallest free blocks first, and of the last extent only as many bytes (whole huge
// pages) as make room, so the large extents every step needs (a softmax's logits) stay. A block freed while the
// blocks in use alone exceed the limit is unmapped. The limit is (1 + headroom) times the most bytes in use at once
// so far (or a fixed number of bytes), so these blocks never hold more than that headroom above the large tensors
// that were alive at once. Blocks come from mmap (2 MiB-aligned with MADV_HUGEPAGE from 2 MiB up unless switched
// off; extents then split and shrink at whole huge pages), never from glibc's heap; requests below 1 MiB go to
// PyTorch's own CPU allocation (c10::alloc_cpu).
//
// Built on first use by semrec/train/block_cache.py (g++ against the installed torch); C entry points only.

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <pthread.h>
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <utility>

namespace {

constexpr size_t kMinBlock = size_t(1) << 20;   // smaller requests: c10::alloc_cpu
constexpr size_t kLarge = size_t(2) << 20;      // classes from here on: the large pool (split, coalesced)
constexpr size_t kHuge = size_t(2) << 20;       // transparent huge page size (x86-64, arm64 4K kernels)
constexpr size_t kPage = size_t(4) << 10;

size_t size_class(size_t n, bool huge_pages) {
  // four classes per power of two: round up to a multiple of a quarter of the largest power of two <= n; with huge
  // pages, blocks of 2 MiB and more are whole huge pages
  size_t p = size_t(1) << (63 - __builtin_clzll(static_cast<unsigned long long>(n)));
  size_t step = p >= 4 ? p / 4 : 1;
  size_t s = (n + step - 1) / step * step;
  return huge_pages && s >= kHuge ? (s + kHuge - 1) / kHuge * kHuge : s;
}

struct Stats {
  uint64_t hits = 0, misses = 0, evictions = 0;
  uint64_t cached_bytes = 0, mapped_bytes = 0, peak_mapped_bytes = 0, peak_used_bytes = 0;
};

struct Block {
  size_t size;
  bool free;
  bool large;
};
using Blocks = std::map<uintptr_t, Block>;           // every mapped block, free or in use, by address
using FreeSet = std::set<std::pair<size_t, uintptr_t>>;  // the free ones by (size, address)

struct Cache {
  std::mutex mutex;
  Blocks blocks;
  FreeSet free_small, free_large;
  size_t fixed_limit = 0;                       // bytes mapped (in use + free) above which free blocks go back,
  double headroom = 0.1;                        // or, when 0, (1 + headroom) x the peak bytes in use
  bool huge_pages = true;                       // MADV_HUGEPAGE on blocks of 2 MiB and more
  Stats stats;
  size_t limit() const {
    return fixed_limit ? fixed_limit : static_cast<size_t>((1.0 + headroom) * stats.peak_used_bytes);
  }
  size_t grain() const { return huge_pages ? kHuge : kPage; }  // where extents split and shrink
  FreeSet& free_set(const Block& b) { return b.large ? free_large : free_small; }
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: tensors may be freed during interpreter shutdown
  return *c;
}

void* map_block(size_t s, bool huge_pages) {
  size_t extra = huge_pages && s >= kHuge ? kHuge : 0;
  void* p = mmap(nullptr, s + extra, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  if (extra) {
    uintptr_t start = reinterpret_cast<uintptr_t>(p);
    uintptr_t aligned = (start + kHuge - 1) & ~(kHuge - 1);
    if (aligned > start) munmap(p, aligned - start);
    uintptr_t tail = start + s + extra - (aligned + s);
    if (tail) munmap(reinterpret_cast<void*>(aligned + s), tail);
    p = reinterpret_cast<void*>(aligned);
    madvise(p, s, MADV_HUGEPAGE);
  }
  return p;
}

// All functions below: the caller holds the mutex. The bookkeeping (std::map / std::set nodes) may throw
// std::bad_alloc; each function leaves the cache consistent when it does.

void unmap_free(Cache& c, Blocks::iterator it) {  // a free block, whole
  c.free_set(it->second).erase({it->second.size, it->first});
  munmap(reinterpret_cast<void*>(it->first), it->second.size);
  c.stats.cached_bytes -= it->second.size;
  c.stats.mapped_bytes -= it->second.size;
  c.stats.evictions += 1;
  c.blocks.erase(it);
}

void evict_all(Cache& c) {
  while (!c.free_small.empty()) unmap_free(c, c.blocks.find(c.free_small.begin()->second));
  while (!c.free_large.empty()) unmap_free(c, c.blocks.find(c.free_large.begin()->second));
}

void make_room(Cache& c, size_t s) {
  // unmap free memory until s more bytes fit within the limit: the smallest free blocks first (each unmapped byte
  // costs a fault when it is asked for again, and the large extents every step needs stay), and of the last large
  // extent only its tail, whole grains, as many as are missing
  while (c.stats.mapped_bytes + s > c.limit()) {
    FreeSet* set = nullptr;
    if (!c.free_small.empty()) set = &c.free_small;
    if (!c.free_large.empty() && (set == nullptr || *c.free_large.begin() < *set->begin())) set = &c.free_large;
    if (set == nullptr) return;
    Blocks::iterator it = c.blocks.find(set->begin()->second);
    size_t over = c.stats.mapped_bytes + s - c.limit();
    size_t cut = (over + c.grain() - 1) / c.grain() * c.grain();
    Block& b = it->second;
    if (!b.large || cut + kLarge > b.size) {
      unmap_free(c, it);
      continue;
    }
    c.free_large.insert({b.size - cut, it->first});  // may throw: nothing changed yet
    c.free_large.erase({b.size, it->first});
    munmap(reinterpret_cast<void*>(it->first + b.size - cut), cut);
    b.size -= cut;
    c.stats.cached_bytes -= cut;
    c.stats.mapped_bytes -= cut;
    c.stats.evictions += 1;
  }
}

void keep_free(Cache& c, Blocks::iterator it) {
  // mark a block free, merged with free large neighbours that touch it; if the bookkeeping cannot grow, the block
  // is unmapped instead (a deleter must not throw)
  Block& b = it->second;
  try {
    c.free_set(b).insert({b.size, it->first});
  } catch (...) {
    munmap(reinterpret_cast<void*>(it->first), b.size);
    c.stats.mapped_bytes -= b.size;
    c.stats.evictions += 1;
    c.blocks.erase(it);
    return;
  }
  b.free = true;
  c.stats.cached_bytes += b.size;
  if (!b.large) return;
  auto merge = [&c](Blocks::iterator left, Blocks::iterator right) {  // both free, large, contiguous
    if (!(left->second.free && right->second.free && left->second.large && right->second.large &&
          left->first + left->second.size == right->first)) return left;
    try {
      c.free_large.insert({left->second.size + right->second.size, left->first});
    } catch (...) {
      return left;  // left as two neighbours: still correct, only less merged
    }
    c.free_large.erase({left->second.size, left->first});
    c.free_large.erase({right->second.size, right->first});
    left->second.size += right->second.size;
    c.blocks.erase(right);
    return left;
  };
  Blocks::iterator next = std::next(it);
  if (next != c.blocks.end()) it = merge(it, next);
  if (it != c.blocks.begin()) merge(std::prev(it), it);
}

void free_block(void* p) {
  if (p == nullptr) return;
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    auto it = c.blocks.find(reinterpret_cast<uintptr_t>(p));
    if (it != c.blocks.end()) {
      if (c.stats.mapped_bytes <= c.limit()) {  // keep it for later requests
        keep_free(c, it);
      } else {  // over the limit (then nothing is free: make_room unmapped it all): hand this one back
        munmap(p, it->second.size);
        c.stats.mapped_bytes -= it->second.size;
        c.stats.evictions += 1;
        c.blocks.erase(it);
      }
      return;
    }
  }
  c10::free_cpu(p);  // a small block from c10::alloc_cpu
}

void note_used(Cache& c) {
  uint64_t used = c.stats.mapped_bytes - c.stats.cached_bytes;
  if (used > c.stats.peak_used_bytes) c.stats.peak_used_bytes = used;
}

void* take_free(Cache& c, size_t s) {
  // large: the smallest free extent that holds s, split when what is left makes a large block; small: a free block
  // of the class or one at most half a class larger. nullptr when none.
  bool large = s >= kLarge;
  FreeSet& set = large ? c.free_large : c.free_small;
  auto found = set.lower_bound({s, 0});
  if (found == set.end() || (!large && found->first > s + s / 2)) return nullptr;
  Blocks::iterator it = c.blocks.find(found->second);
  Block& b = it->second;
  if (large && b.size - s >= kLarge) {  // split: the front serves the request, the rest stays free
    uintptr_t rest = it->first + s;
    Blocks::iterator r = c.blocks.emplace_hint(std::next(it), rest, Block{b.size - s, true, true});  // may throw
    try {
      c.free_large.insert({b.size - s, rest});
    } catch (...) {
      c.blocks.erase(r);
      throw;
    }
    set.erase(found);
    b.size = s;
    c.stats.cached_bytes -= s;
  } else {
    set.erase(found);
    c.stats.cached_bytes -= b.size;
  }
  b.free = false;
  c.stats.hits += 1;
  note_used(c);
  return reinterpret_cast<void*>(it->first);
}

void* take_block(Cache& c, size_t s) {
  try {
    if (void* p = take_free(c, s)) return p;
  } catch (...) {  // no memory for the bookkeeping: a fresh mapping below, or PyTorch's own allocation
  }
  c.stats.misses += 1;
  uint64_t peak_before = c.stats.peak_used_bytes;
  uint64_t used = c.stats.mapped_bytes - c.stats.cached_bytes + s;
  if (used > c.stats.peak_used_bytes) c.stats.peak_used_bytes = used;
  void* p = nullptr;
  try {
    make_room(c, s);  // stay within the limit
    p = map_block(s, c.huge_pages);
    if (p == nullptr) {  // out of memory or address space: give every free block back and try once more
      evict_all(c);
      p = map_block(s, c.huge_pages);
    }
    if (p != nullptr) c.blocks.emplace(reinterpret_cast<uintptr_t>(p), Block{s, false, s >= kLarge});
  } catch (...) {
    if (p != nullptr) munmap(p, s);
    p = nullptr;
  }
  if (p == nullptr) {  // nothing mapped: a failed request must not raise the limit (PyTorch's allocator takes it)
    c.stats.peak_used_bytes = peak_before;
    return nullptr;
  }
  c.stats.mapped_bytes += s;
  if (c.stats.mapped_bytes > c.stats.peak_mapped_bytes) c.stats.peak_mapped_bytes = c.stats.mapped_bytes;
  return p;
}

struct BlockCacheAllocator final : public c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    void* p = nullptr;
    if (n >= kMinBlock) {
      Cache& c = cache();
      std::lock_guard<std::mutex> lock(c.mutex);
      p = take_block(c, size_class(n, c.huge_pages));
    }
    if (p == nullptr) p = c10::alloc_cpu(n);  // small, or no mapping possible: PyTorch's own (and its OOM error)
    return {p, p, &free_block, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &free_block; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

BlockCacheAllocator* g_allocator = nullptr;
std::once_flag g_installed;

// fork: the child must not inherit the mutex held by another thread of the parent
void lock_for_fork() { cache().mutex.lock(); }
void unlock_after_fork() { cache().mutex.unlock(); }

}  // namespace

extern "C" {

// Make this allocator PyTorch's CPU allocator (tensors allocated before keep their own deleter); freed blocks are
// kept while the blocks mapped (in use + free) stay within limit_bytes, or when that is 0, within (1 + headroom)
// times the most bytes in use at once so far; huge_pages: MADV_HUGEPAGE on new blocks of 2 MiB and more. Calling
// it again only changes the settings.
int semrec_block_cache_install(uint64_t limit_bytes, double headroom, int huge_pages) {
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    c.fixed_limit = limit_bytes;
    c.headroom = headroom;
    c.huge_pages = huge_pages != 0;
    try {
      make_room(c, 0);
    } catch (...) {
      evict_all(c);
    }
  }
  std::call_once(g_installed, [] {
    pthread_atfork(&lock_for_fork, &unlock_after_fork, &unlock_after_fork);
    g_allocator = new BlockCacheAllocator();
    c10::SetCPUAllocator(g_allocator, /*priority=*/100);
  });
  return 0;
}

// Unmap every free block (the cache's resident pages go back to the system).
void semrec_block_cache_empty() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  evict_all(c);
}

// hits, misses, evictions, cached_bytes, mapped_bytes, peak_mapped_bytes, peak_used_bytes, limit
void semrec_block_cache_stats(uint64_t* out) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  out[0] = c.stats.hits;
  out[1] = c.stats.misses;
  out[2] = c.stats.evictions;
  out[3] = c.stats.cached_bytes;
  out[4] = c.stats.mapped_bytes;
  out[5] = c.stats.peak_mapped_bytes;
  out[6] = c.stats.peak_used_bytes;
  out[7] = c.limit();
}

}  // extern "C"
