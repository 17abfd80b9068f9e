//! `HugePageHeap` backs large blocks with transparent huge pages: first a
//! block glibc maps on its own, then, after `keep_freed_memory`, blocks on
//! the main heap; and none with `PETAL_NO_HUGE_PAGES=1`. Runs where the
//! kernel offers huge pages on request.

#[global_allocator]
static HEAP: tensor::cpu::HugePageHeap = tensor::cpu::HugePageHeap;

const MIB: usize = 1 << 20;

fn main() {
    let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if !(mode.contains("[madvise]") || mode.contains("[always]")) {
        println!("test huge_pages ... skipped: transparent huge pages are off on this machine ({})", mode.trim());
        return;
    }

    // Above glibc's mmap threshold, without keep_freed_memory: a mapping of its own.
    let mapped = touched_block(64 * MIB);
    let (huge, resident) = huge_and_resident_kib(|name, start, end| !name.contains("[heap]") && (start..end).contains(&(mapped.as_ptr() as usize)));
    if std::env::var("PETAL_NO_HUGE_PAGES").as_deref() == Ok("1") {
        // The switch's run, started below: no advice, so (in `madvise`
        // mode) no huge pages.
        if mode.contains("[madvise]") {
            assert_eq!(huge, 0, "PETAL_NO_HUGE_PAGES=1, yet {huge} KiB of {resident} KiB on huge pages");
        }
        return;
    }
    assert!(huge * 1024 >= 48 * MIB, "a 64 MiB mapped block: {huge} KiB of {resident} KiB on huge pages");
    drop(mapped);

    assert!(tensor::cpu::keep_freed_memory());
    let blocks: Vec<Vec<u8>> = [3 * MIB, 24 * MIB, 5 * MIB, 40 * MIB].into_iter().map(touched_block).collect();
    let (huge, resident) = huge_and_resident_kib(|name, _, _| name.contains("[heap]"));
    // Each growth of the heap leaves the 2 MiB stretch where its first
    // request ends on small pages.
    assert!(huge * 1024 >= 56 * MIB, "72 MiB of blocks on the heap: {huge} KiB of {resident} KiB resident on huge pages");
    assert!(blocks.iter().all(|block| block.iter().step_by(4096).all(|&byte| byte == 1)));

    // The same program again with the switch on.
    let status = std::process::Command::new(std::env::current_exe().expect("this test's path")).env("PETAL_NO_HUGE_PAGES", "1").status().expect("run this test again");
    assert!(status.success(), "the run with PETAL_NO_HUGE_PAGES=1 failed");
    println!("test huge_pages ... ok");
}

fn touched_block(len: usize) -> Vec<u8> {
    let mut block = Vec::<u8>::with_capacity(len);
    block.resize(len, 1);
    block
}

/// Huge and resident KiB summed over the mappings `pick` chooses, from
/// /proc/self/smaps.
fn huge_and_resident_kib(pick: impl Fn(&str, usize, usize) -> bool) -> (usize, usize) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let (mut huge, mut resident, mut picked) = (0, 0, false);
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let (start, end) = (usize::from_str_radix(start, 16).unwrap(), usize::from_str_radix(end, 16).unwrap());
            picked = pick(line, start, end);
        } else if picked {
            let kib = fields.next().and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
            match first {
                "AnonHugePages:" => huge += kib,
                "Rss:" => resident += kib,
                _ => {}
            }
        }
    }
    (huge, resident)
}
