// A bounded caching allocator for PyTorch's CPU tensors (issue 20, "kernel time").
//
// Why: a training step allocates and frees the same multi-megabyte activations every step. Served by glibc, each
// of them is either an mmapped block (unmapped when freed: the next step's copy faults in fresh pages that the
// kernel zero-fills, 20-60% of a step's CPU time) or a heap block (kept resident, but the heap fragments under the
// step's varying shapes and resident memory grows without bound: 3.6 -> 7.9 GiB over 120 CCFRec steps).
// This allocator keeps freed blocks of 1 MiB and more in size classes (four per power of two) and hands them to the
// next request of the same class, as PyTorch's CUDA caching allocator does for GPU memory, within a limit on the
// bytes it maps (blocks in use plus free): a request that would map past the limit first unmaps the smallest free
// blocks until it fits, and a block freed while the blocks in use alone exceed the limit is unmapped. The limit is (1 +
// headroom) times the most bytes in use at once so far (or a fixed number of bytes), so these blocks never hold more
// than that headroom above the large tensors that were alive at once. Blocks come from mmap (2 MiB-aligned with
// MADV_HUGEPAGE from 2 MiB up unless switched off), never from glibc's heap; requests below 1 MiB go to PyTorch's
// own CPU allocation (c10::alloc_cpu).
//
// Built on first use by semrec/train/block_cache.py (g++ against the installed torch); C entry points only.

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <pthread.h>
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace {

constexpr size_t kMinBlock = size_t(1) << 20;   // smaller requests: c10::alloc_cpu
constexpr size_t kHuge = size_t(2) << 20;       // transparent huge page size (x86-64, arm64 4K kernels)

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

struct FreeBlock;
using Lru = std::list<FreeBlock>;
using BySize = std::multimap<size_t, Lru::iterator>;
struct FreeBlock {
  void* ptr;
  size_t size;
  BySize::iterator where;
};

struct Cache {
  std::mutex mutex;
  Lru lru;                                      // free blocks, most recently freed first
  BySize by_size;                               // the same blocks by size class
  std::unordered_map<void*, size_t> block_size;  // every mapped block, free or in use
  size_t fixed_limit = 0;                       // bytes mapped (in use + free) above which free blocks go back,
  double headroom = 0.1;                        // or, when 0, (1 + headroom) x the peak bytes in use
  bool huge_pages = true;                       // MADV_HUGEPAGE on blocks of 2 MiB and more
  Stats stats;
  size_t limit() const {
    return fixed_limit ? fixed_limit : static_cast<size_t>((1.0 + headroom) * stats.peak_used_bytes);
  }
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

void unmap(Cache& c, void* p, size_t s) {  // caller holds the mutex
  munmap(p, s);
  c.block_size.erase(p);
  c.stats.mapped_bytes -= s;
  c.stats.evictions += 1;
}

void evict(Cache& c, BySize::iterator where) {  // caller holds the mutex
  Lru::iterator block = where->second;
  c.by_size.erase(where);
  c.stats.cached_bytes -= block->size;
  unmap(c, block->ptr, block->size);
  c.lru.erase(block);
}

void evict_oldest(Cache& c) { evict(c, c.lru.back().where); }  // caller holds the mutex; lru not empty

void make_room(Cache& c, size_t s) {  // caller holds the mutex
  // unmap the smallest free blocks first: as few bytes as will do (each unmapped byte costs a fault when its class
  // is asked for again), and the large blocks every step needs (a softmax's logits) stay
  while (!c.by_size.empty() && c.stats.mapped_bytes + s > c.limit()) evict(c, c.by_size.begin());
}

void free_block(void* p) {
  if (p == nullptr) return;
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    auto it = c.block_size.find(p);
    if (it != c.block_size.end()) {
      size_t s = it->second;
      if (c.stats.mapped_bytes <= c.limit()) {  // keep it for the next request of its class
        try {  // a deleter must not throw: when the bookkeeping cannot grow, the block goes back instead
          BySize::iterator where = c.by_size.emplace(s, c.lru.end());
          try {
            c.lru.push_front(FreeBlock{p, s, where});
          } catch (...) {
            c.by_size.erase(where);
            throw;
          }
          where->second = c.lru.begin();
          c.stats.cached_bytes += s;
        } catch (...) {
          unmap(c, p, s);
        }
      } else {  // in-use blocks alone are over the limit: hand this one back
        unmap(c, p, s);
      }
      return;
    }
  }
  c10::free_cpu(p);  // a small block from c10::alloc_cpu
}

void* take_block(Cache& c, size_t s) {  // caller holds the mutex
  // a free block of the request's class, else one at most half a class larger (two classes up at most)
  auto it = c.by_size.lower_bound(s);
  if (it != c.by_size.end() && it->first <= s + s / 2) {
    Lru::iterator block = it->second;
    void* p = block->ptr;
    c.stats.cached_bytes -= block->size;
    c.by_size.erase(it);
    c.lru.erase(block);
    c.stats.hits += 1;
    uint64_t used = c.stats.mapped_bytes - c.stats.cached_bytes;
    if (used > c.stats.peak_used_bytes) c.stats.peak_used_bytes = used;
    return p;
  }
  c.stats.misses += 1;
  uint64_t peak_before = c.stats.peak_used_bytes;
  uint64_t used = c.stats.mapped_bytes - c.stats.cached_bytes + s;
  if (used > c.stats.peak_used_bytes) c.stats.peak_used_bytes = used;
  make_room(c, s);  // stay within the limit
  void* p = map_block(s, c.huge_pages);
  if (p == nullptr) {  // out of memory or address space: give every free block back and try once more
    while (!c.lru.empty()) evict_oldest(c);
    p = map_block(s, c.huge_pages);
  }
  if (p != nullptr) {
    try {
      c.block_size[p] = s;
    } catch (...) {
      munmap(p, s);
      p = nullptr;
    }
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
    while (!c.lru.empty() && c.stats.mapped_bytes > c.limit()) evict_oldest(c);
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
  while (!c.lru.empty()) evict_oldest(c);
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
