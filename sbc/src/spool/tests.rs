use super::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "xsbc-spool-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn opts(segment_bytes: u64, max_bytes: u64) -> SpoolOptions {
    SpoolOptions { segment_bytes, max_bytes, sync: SyncMode::Always }
}

fn payload(i: u64) -> Vec<u8> {
    format!("record number {i}").into_bytes()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "spool"))
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_in_order() {
    let d = TempDir::new("rt");
    let mut s = Spool::open(&d.0, SpoolOptions::default()).unwrap();
    let seqs: Vec<u64> = (0..10).map(|i| s.append(&payload(i)).unwrap()).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    let got = s.read_from(1, 100).unwrap();
    assert_eq!(got.len(), 10);
    for (i, (seq, p)) in got.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(p, &payload(i as u64));
    }
    assert_eq!(s.read_from(4, 3).unwrap().iter().map(|r| r.0).collect::<Vec<_>>(), vec![4, 5, 6]);
    assert!(s.read_from(11, 3).unwrap().is_empty());
    let st = s.stats();
    assert_eq!(st.records, 10);
    assert_eq!(st.oldest_unsent.unwrap().0, 1);
    let age = SystemTime::now().duration_since(st.oldest_unsent.unwrap().1).unwrap();
    assert!(age < Duration::from_secs(5), "{age:?}");
    // Empty payloads are records too.
    let e = s.append(b"").unwrap();
    assert_eq!(s.read_from(e, 1).unwrap(), vec![(e, Vec::new())]);
}

#[test]
fn reopen_keeps_records_and_sent() {
    let d = TempDir::new("reopen");
    {
        let mut s = Spool::open(&d.0, opts(200, 1 << 20)).unwrap();
        for i in 0..20 {
            s.append(&payload(i)).unwrap();
        }
        s.set_sent(8).unwrap();
    }
    let mut s = Spool::open(&d.0, opts(200, 1 << 20)).unwrap();
    assert_eq!(s.sent(), 8);
    assert_eq!(s.next_seq(), 21);
    assert_eq!(s.stats().records, 13);
    let got = s.read_from(s.sent(), 100).unwrap();
    assert_eq!(got.first().unwrap(), &(8, payload(7)));
    assert_eq!(got.last().unwrap(), &(20, payload(19)));
    assert_eq!(s.append(b"after").unwrap(), 21);
}

#[test]
fn seq_continues_across_segments_and_restarts() {
    let d = TempDir::new("seq");
    let mut all = Vec::new();
    for round in 0..3u64 {
        let mut s = Spool::open(&d.0, opts(150, 1 << 20)).unwrap();
        for i in 0..7 {
            all.push(s.append(&payload(round * 100 + i)).unwrap());
        }
        // Everything sent in the middle round: segments go, the seq stays.
        if round == 1 {
            s.set_sent(s.next_seq()).unwrap();
            assert_eq!(segments(&d.0).len(), 1);
            assert_eq!(s.stats().records, 0);
            assert_eq!(s.stats().oldest_unsent, None);
        }
    }
    assert_eq!(all, (1..=21).collect::<Vec<_>>());
    assert!(segments(&d.0).len() > 1, "segment_bytes 150 rolls segments");
    let s = Spool::open(&d.0, opts(150, 1 << 20)).unwrap();
    let got: Vec<u64> = s.read_from(s.sent(), 100).unwrap().iter().map(|r| r.0).collect();
    assert_eq!(got, (15..=21).collect::<Vec<_>>());
}

#[test]
fn set_sent_deletes_whole_segments_below_only() {
    let d = TempDir::new("sent");
    // Each record is 24 + 15 bytes: three per 130-byte segment.
    let mut s = Spool::open(&d.0, opts(130, 1 << 20)).unwrap();
    for i in 0..9 {
        s.append(&payload(i)).unwrap();
    }
    assert_eq!(segments(&d.0).len(), 3);
    let bytes = s.stats().bytes;
    s.set_sent(3).unwrap(); // seqs 1, 2 sent; segment 1..=3 still holds 3.
    assert_eq!(segments(&d.0).len(), 3);
    s.set_sent(4).unwrap();
    assert_eq!(segments(&d.0).len(), 2);
    assert!(s.stats().bytes < bytes);
    assert_eq!(s.read_from(1, 100).unwrap().first().unwrap().0, 4);
    s.set_sent(2).unwrap(); // never moves back
    assert_eq!(s.sent(), 4);
    s.set_sent(1000).unwrap(); // capped at the next seq
    assert_eq!(s.sent(), 10);
    assert_eq!(segments(&d.0).len(), 1, "the active segment stays");
}

#[test]
fn full_refuses_then_accepts_after_sent() {
    let d = TempDir::new("full");
    let mut s = Spool::open(&d.0, opts(100, 300)).unwrap();
    let mut n = 0;
    loop {
        match s.append(&payload(n)) {
            Ok(_) => n += 1,
            Err(SpoolError::Full { bytes, max }) => {
                assert_eq!(max, 300);
                assert!(bytes <= 300);
                break;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(n < 100);
    }
    assert_eq!(n, 7, "7 records of 39 bytes fit in 300");
    // Still full after a restart.
    drop(s);
    let mut s = Spool::open(&d.0, opts(100, 300)).unwrap();
    assert!(matches!(s.append(&payload(9)), Err(SpoolError::Full { .. })));
    s.set_sent(s.next_seq()).unwrap();
    assert_eq!(s.append(b"x").unwrap(), 8);
}

fn write_then_damage(name: &str, damage: impl FnOnce(&Path, u64)) -> (TempDir, Spool) {
    let d = TempDir::new(name);
    {
        let mut s = Spool::open(&d.0, SpoolOptions::default()).unwrap();
        for i in 0..5 {
            s.append(&payload(i)).unwrap();
        }
    }
    let seg = segments(&d.0).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    damage(&seg, len);
    let s = Spool::open(&d.0, SpoolOptions::default()).unwrap();
    (d, s)
}

fn seqs(s: &Spool) -> Vec<u64> {
    s.read_from(1, 100).unwrap().iter().map(|r| r.0).collect()
}

#[test]
fn torn_tail_mid_payload_is_cut() {
    let (d, mut s) = write_then_damage("torn", |seg, len| {
        let f = OpenOptions::new().write(true).open(seg).unwrap();
        f.set_len(len - 5).unwrap();
    });
    assert_eq!(seqs(&s), vec![1, 2, 3, 4]);
    // The next append follows the last good record, and is readable after a reopen.
    assert_eq!(s.append(b"new").unwrap(), 5);
    drop(s);
    let s = Spool::open(&d.0, SpoolOptions::default()).unwrap();
    assert_eq!(seqs(&s), vec![1, 2, 3, 4, 5]);
    assert_eq!(s.read_from(5, 1).unwrap()[0].1, b"new");
}

#[test]
fn torn_tail_mid_header_is_cut() {
    let (_d, s) = write_then_damage("tornhdr", |seg, _| {
        let mut f = OpenOptions::new().append(true).open(seg).unwrap();
        f.write_all(&[7u8; 10]).unwrap();
    });
    assert_eq!(seqs(&s), vec![1, 2, 3, 4, 5]);
    assert_eq!(s.next_seq(), 6);
}

#[test]
fn corrupt_bytes_cut_from_the_bad_record() {
    let (_d, s) = write_then_damage("corrupt", |seg, len| {
        // A byte inside the fourth record's payload (each record is 39 bytes).
        let f = OpenOptions::new().write(true).open(seg).unwrap();
        assert_eq!(len, 195);
        f.write_all_at(b"X", 3 * 39 + 30).unwrap();
    });
    assert_eq!(seqs(&s), vec![1, 2, 3]);
    let on_disk: u64 = segments(s.dir()).iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert_eq!(on_disk, 117, "the damaged tail is cut off on disk");
    assert_eq!(s.stats().bytes, 117);
}

#[test]
fn damaged_sent_file_resends_from_oldest() {
    let d = TempDir::new("sentbad");
    {
        let mut s = Spool::open(&d.0, SpoolOptions::default()).unwrap();
        for i in 0..3 {
            s.append(&payload(i)).unwrap();
        }
        s.set_sent(3).unwrap();
    }
    fs::write(d.0.join(SENT), b"garbage").unwrap();
    let s = Spool::open(&d.0, SpoolOptions::default()).unwrap();
    assert_eq!(s.sent(), 1);
    assert_eq!(seqs(&s), vec![1, 2, 3]);
}

#[test]
fn too_large_is_refused() {
    let d = TempDir::new("large");
    let mut s = Spool::open(&d.0, SpoolOptions::default()).unwrap();
    assert!(matches!(s.append(&vec![0u8; MAX_PAYLOAD + 1]), Err(SpoolError::TooLarge(_))));
    assert_eq!(s.append(b"ok").unwrap(), 1);
}
