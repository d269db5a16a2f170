//! A hint to the CPU to start loading memory the simulator is about to touch.
//!
//! A large simulated ring does not fit in the caches: every event lands on a node whose state
//! was last touched long before, so the run waits on memory. The event queue knows which
//! events come next, so the memory they will need can be requested a few events early.

/// Asks for the cache line holding `p` to be loaded. Never faults, changes nothing observable,
/// and does nothing off x86_64.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: a prefetch is only a hint; it reads nothing architecturally and cannot fault,
    // whatever the address. SSE, which it needs, is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches the first `lines` cache lines of `*p`.
#[inline(always)]
pub(crate) fn prefetch_lines<T>(p: *const T, lines: usize) {
    let base = p.cast::<u8>();
    for i in 0..lines {
        prefetch(base.wrapping_add(64 * i));
    }
}
