//! Weight matrices in transparent huge pages (Linux).
//!
//! A CPU decode step streams every weight once. With 4 KiB pages that is a TLB miss every
//! 4 KiB (~126K a token for mamba2-130m in f32), and in a virtual machine each miss walks two
//! page tables; 2 MiB pages take 512 times fewer (measured ~1.1x f32 decode on this project's
//! 2-core VM, docs/performance-log.md). Where THP is `madvise` (Debian's and Ubuntu's default)
//! memory gets them only when asked. Loaders ask before they write a tensor
//! ([`vec_with_capacity`]: pages faulted in afterwards are huge), and the CPU engine collapses
//! whatever is still in small pages, such as weights quantized or widened after loading
//! ([`back_weights`], `MADV_COLLAPSE`, Linux 6.1+). All of it is a hint: where the kernel says
//! no (an older kernel, THP `never`, no free huge page) the weights stay where they are and only
//! speed differs. Elsewhere than Linux this does nothing.

use crate::model::Model;

/// Huge pages under every large matrix of `model`, in whichever storage it has: for the CPU
/// engine, whose copies are by then the model's matrices (`WeightCopies::sharing`), these
/// are what its products read.
pub(crate) fn back_weights(model: &Model) {
    for t in model.matrices() {
        collapse(t.data.as_ptr().cast(), std::mem::size_of_val(&t.data[..]));
        if let Some(q) = &t.blocks {
            collapse(q.bytes.as_ptr(), q.bytes.len());
        }
        if let Some(h) = &t.half {
            collapse(h.as_ptr().cast(), std::mem::size_of_val(&h[..]));
        }
    }
}

/// An empty Vec with room for `n` values whose whole 2 MiB pages are asked to be huge before
/// anything is written to them (a large allocation is fresh, unfaulted memory).
pub(crate) fn vec_with_capacity<T>(n: usize) -> Vec<T> {
    let v: Vec<T> = Vec::with_capacity(n);
    advise(
        v.as_ptr().cast(),
        n.saturating_mul(std::mem::size_of::<T>()),
        false,
    );
    v
}

/// [`vec_with_capacity`], or `None` where the allocator cannot give `n` values (in wasm, a
/// heap that cannot grow): for optional structures, which are then left out.
pub(crate) fn try_vec_with_capacity<T>(n: usize) -> Option<Vec<T>> {
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(n).ok()?;
    advise(
        v.as_ptr().cast(),
        n.saturating_mul(std::mem::size_of::<T>()),
        false,
    );
    Some(v)
}

/// Moves the written pages in `len` bytes at `at` into huge pages now, and asks for huge ones
/// for any faulted in later.
fn collapse(at: *const u8, len: usize) {
    advise(at, len, true)
}

/// The whole 2 MiB pages inside `len` bytes at `at` in huge pages, if the kernel will:
/// `MADV_HUGEPAGE`, then with `now` `MADV_COLLAPSE` (already-huge pages cost it nothing).
#[cfg(target_os = "linux")]
fn advise(at: *const u8, len: usize, now: bool) {
    // x86-64's and 4 KiB-page arm64's PMD size; on a kernel with another, fewer (or no)
    // regions qualify, nothing fails.
    const HUGE: usize = 2 << 20;
    // Not in every libc target's constants (musl's lacks it); Linux's value on every arch.
    const MADV_COLLAPSE: libc::c_int = 25;
    let start = (at as usize).next_multiple_of(HUGE);
    let end = (at as usize).saturating_add(len) / HUGE * HUGE;
    if end <= start {
        return;
    }
    // SAFETY: [start, end) lies inside one live allocation the caller owns or borrows; both
    // advices keep the contents (they only change how the range is mapped). Their errors are
    // ignored on purpose: hints.
    unsafe {
        let p = start as *mut libc::c_void;
        libc::madvise(p, end - start, libc::MADV_HUGEPAGE);
        if now {
            libc::madvise(p, end - start, MADV_COLLAPSE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise(_at: *const u8, _len: usize, _now: bool) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The flags of the mapping holding address `at`, from /proc/self/smaps.
    fn vm_flags(at: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().and_then(|r| {
                let (lo, hi) = r.split_once('-')?;
                Some((
                    usize::from_str_radix(lo, 16).ok()?,
                    usize::from_str_radix(hi, 16).ok()?,
                ))
            });
            // A mapping's header line starts `lo-hi` (hex); its fields follow, VmFlags last.
            if let Some((lo, hi)) = range {
                inside = (lo..hi).contains(&at);
            } else if let Some(flags) = line.strip_prefix("VmFlags:").filter(|_| inside) {
                return flags.to_string();
            }
        }
        panic!("no mapping holds {at:#x}")
    }

    #[test]
    fn large_tensors_are_asked_to_be_huge_pages() {
        // 12 MiB: whole 2 MiB pages inside, whatever the allocation's alignment.
        let mut v: Vec<f32> = super::vec_with_capacity(3 << 20);
        v.resize(3 << 20, 1.0);
        let page = (v.as_ptr() as usize).next_multiple_of(2 << 20);
        // `hg`: the mapping carries MADV_HUGEPAGE (set whatever THP's sysfs mode, on every
        // kernel built with THP; one without refuses the hint and the memory is as it was).
        let thp = std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists();
        let advised = vm_flags(page).split_whitespace().any(|f| f == "hg");
        assert_eq!(advised, thp, "MADV_HUGEPAGE on {page:#x}");
        assert!(v.iter().all(|&x| x == 1.0));
        // A small buffer holds no whole huge page and is left alone.
        let small: Vec<f32> = super::vec_with_capacity(1000);
        assert_eq!(small.capacity(), 1000);
    }
}
