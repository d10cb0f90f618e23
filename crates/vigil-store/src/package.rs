//! A pushed model package: a tar archive (optionally gzip-compressed) holding
//! `model.onnx`, an optional `vigil.toml` and an optional `profile.json` (the
//! reference profile of its training data), at its root or under one top
//! directory. Unpacked in memory, never onto disk, with everything an archive
//! can use to attack refused: absolute paths, `..`, links, devices, too many
//! entries, and sizes past the limits (checked on the decompressed stream, so
//! a gzip bomb stops at the limit). A gzip stream of several members (what
//! `cat a.gz b.gz`, pigz and bgzip write) is read whole, and a tar stream must
//! end with its end marker: a cut archive is refused, not read in part.

use std::io::{self, Read};
use std::path::{Component, Path};
use std::sync::Arc;
use vigil_core::budget::{MemoryBudget, Reservation};
use vigil_core::{Error, ErrorCode};

const OVER_LIMIT: &str = "the archive is larger than the package size limit";

pub const MODEL_FILE: &str = "model.onnx";
pub const MANIFEST_FILE: &str = "vigil.toml";
pub const PROFILE_FILE: &str = "profile.json";
/// Largest `profile.json`: 10 000 features of 102 bins fit well within it.
const MAX_PROFILE_BYTES: u64 = 64 << 20;

/// Limits on what one package may hold.
#[derive(Debug, Clone, Copy)]
pub struct PackageLimits {
    /// All entries together, decompressed.
    pub max_total_bytes: u64,
    pub max_entries: usize,
    pub max_manifest_bytes: u64,
}

impl Default for PackageLimits {
    fn default() -> Self {
        // ONNX protobufs stop at 2 GiB; a little more for the tar headers and manifest.
        PackageLimits { max_total_bytes: (2 << 30) + (16 << 20), max_entries: 64, max_manifest_bytes: 1 << 20 }
    }
}

#[derive(Debug)]
pub struct Package {
    pub model: Vec<u8>,
    /// What the unpacked files hold of the server's memory budget, until dropped.
    pub memory: Reservation,
    /// `vigil.toml`'s text; empty when the package has none.
    pub manifest: String,
    /// `profile.json`'s text, if the package has one (not read here).
    pub profile: Option<String>,
}

/// Reads a package from tar or tar.gz bytes, with no memory budget but the limits.
pub fn unpack(bytes: &[u8], limits: &PackageLimits) -> Result<Package, Error> {
    unpack_within(bytes, limits, &MemoryBudget::new(u64::MAX))
}

/// Reads a package, reserving each file's size from `budget` before it is
/// read into memory: past the budget the push fails fast (503), it does not
/// wait and it does not allocate.
/// The archive's own bytes are counted as held already (by the body that
/// brought them), so that a lone push larger than the budget still goes through.
pub fn unpack_within(bytes: &[u8], limits: &PackageLimits, budget: &Arc<MemoryBudget>) -> Result<Package, Error> {
    let mut memory = budget.try_reserve_beside(0, bytes.len() as u64).ok_or_else(|| busy(budget))?;
    let bad = |why: String| {
        // Too big is 413, whichever entry found out.
        let code = if why.contains(OVER_LIMIT) { ErrorCode::PayloadTooLarge } else { ErrorCode::InvalidInput };
        Error::new(code, format!("package: {why}"))
    };
    if bytes.is_empty() {
        return Err(bad("the body is empty; send a tar or tar.gz archive".into()));
    }
    let reader: Box<dyn Read + '_> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let mut archive = tar::Archive::new(Tail::new(Limited { inner: reader, left: limits.max_total_bytes }));
    let mut model: Option<(String, Vec<u8>)> = None;
    let mut manifest: Option<(String, String)> = None;
    let mut profile: Option<(String, String)> = None;
    let mut top_dirs: Vec<String> = Vec::new();
    let entries = archive.entries().map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for (i, entry) in entries.enumerate() {
        if i >= limits.max_entries {
            return Err(bad(format!("more than {} entries", limits.max_entries)));
        }
        let mut entry = entry.map_err(|e| bad(format!("entry {i}: {e}")))?;
        let kind = entry.header().entry_type();
        // Directories (`./` from `tar -C dir .`), and pax global headers (`git
        // archive` writes one), carry no file: nothing of them is used.
        if kind.is_dir() || kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        let path = entry.path().map_err(|e| bad(format!("entry {i}: bad path: {e}")))?.into_owned();
        let shown = path.display().to_string();
        let parts = normal_parts(&path).ok_or_else(|| bad(format!("'{shown}' is absolute or leaves the archive")))?;
        if !kind.is_file() {
            return Err(bad(format!("'{shown}' is a link or special file; only regular files are allowed")));
        }
        if let [top, ..] = parts.as_slice()
            && parts.len() > 1
            && !top_dirs.contains(top)
        {
            top_dirs.push(top.clone());
        }
        let name = parts.last().cloned().unwrap_or_default();
        // Only the package's own files at its root (or under one top directory) count.
        if parts.len() > 2 || ![MODEL_FILE, MANIFEST_FILE, PROFILE_FILE].contains(&name.as_str()) {
            io::copy(&mut entry, &mut io::sink()).map_err(|e| bad(format!("'{shown}': {e}")))?;
            continue;
        }
        let dir = if parts.len() == 2 { parts[0].clone() } else { String::new() };
        if name == MODEL_FILE {
            if model.is_some() {
                return Err(bad(format!("more than one {MODEL_FILE}")));
            }
            // The header's size, capped by the limit, so the buffer is allocated once.
            let size = entry.size().min(limits.max_total_bytes);
            if !memory.try_grow(size) {
                return Err(busy(budget));
            }
            let mut data = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut data).map_err(|e| bad(format!("'{shown}': {e}")))?;
            model = Some((dir, data));
        } else {
            let (slot, max) = if name == MANIFEST_FILE {
                (&mut manifest, limits.max_manifest_bytes)
            } else {
                (&mut profile, MAX_PROFILE_BYTES)
            };
            if slot.is_some() {
                return Err(bad(format!("more than one {name}")));
            }
            let mut text = String::new();
            (&mut entry)
                .take(max + 1)
                .read_to_string(&mut text)
                .map_err(|e| bad(format!("'{shown}' is not UTF-8 text: {e}")))?;
            if text.len() as u64 > max {
                return Err(bad(format!("{name} is over {max} bytes")));
            }
            *slot = Some((dir, text));
        }
    }
    check_end(archive.into_inner()).map_err(bad)?;
    if top_dirs.len() > 1 {
        return Err(bad(format!("files under several top directories {top_dirs:?}; pack one model per archive")));
    }
    let (model_dir, model) = model.ok_or_else(|| bad(format!("no {MODEL_FILE} at the archive's root")))?;
    let beside = |file: Option<(String, String)>, name: &str| match file {
        Some((dir, _)) if dir != model_dir => Err(bad(format!("{name} is not beside {MODEL_FILE}"))),
        Some((_, text)) => Ok(Some(text)),
        None => Ok(None),
    };
    let manifest = beside(manifest, MANIFEST_FILE)?.unwrap_or_default();
    let profile = beside(profile, PROFILE_FILE)?;
    Ok(Package { model, memory, manifest, profile })
}

fn busy(budget: &MemoryBudget) -> Error {
    Error::new(
        ErrorCode::Overloaded,
        format!(
            "package: the server is holding {} bytes of other requests and packages (limits.max_inflight_bytes is {}); \
             retry shortly",
            budget.in_use(),
            budget.max()
        ),
    )
}

/// The path's parts if every one is a plain name (`.` ignored); `None` for
/// absolute paths, `..`, and anything else that could leave the archive.
fn normal_parts(path: &Path) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_owned()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then_some(parts)
}

/// A tar stream ends with two zero blocks: the reader stops at the first, the
/// second (and any padding to the record size) must follow, all zeros. A stream
/// cut between entries would otherwise read as a shorter, valid archive.
fn check_end<R: Read>(mut rest: Tail<R>) -> Result<(), String> {
    let ended_on_zero_block = rest.last.len() == BLOCK && rest.last.iter().all(|&b| b == 0);
    let (mut after, mut buf) = (0u64, [0u8; 8192]);
    loop {
        let n = rest.inner.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Err("data follows the archive's end marker (several archives joined?); send one archive".into());
        }
        after += n as u64;
    }
    if !ended_on_zero_block || after < BLOCK as u64 {
        return Err("the tar stream has no end marker: the archive is cut short".into());
    }
    Ok(())
}

const BLOCK: usize = 512;

/// Remembers the last block's worth of bytes read, for [`check_end`].
struct Tail<R> {
    inner: R,
    last: Vec<u8>,
}

impl<R> Tail<R> {
    fn new(inner: R) -> Self {
        Tail { inner, last: Vec::with_capacity(2 * BLOCK) }
    }
}

impl<R: Read> Read for Tail<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = &buf[..n];
        if n >= BLOCK {
            self.last.clear();
            self.last.extend_from_slice(&read[n - BLOCK..]);
        } else {
            self.last.extend_from_slice(read);
            let excess = self.last.len().saturating_sub(BLOCK);
            self.last.drain(..excess);
        }
        Ok(n)
    }
}

/// Fails once more than `left` bytes have been read: the decompressed size limit.
struct Limited<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left =
            self.left.checked_sub(n as u64).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, OVER_LIMIT))?;
        Ok(n)
    }
}

/// Packs a directory's `model.onnx`, `vigil.toml` and `profile.json` (if
/// any) as tar.gz: what `vigil models push DIR` sends.
pub fn pack_dir(dir: &Path) -> Result<Vec<u8>, Error> {
    let fail = |e: io::Error| Error::invalid_input(format!("packing {}: {e}", dir.display()));
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    builder.follow_symlinks(true);
    let model = dir.join(MODEL_FILE);
    if !model.is_file() {
        return Err(Error::invalid_input(format!("{} has no {MODEL_FILE}", dir.display())));
    }
    builder.append_path_with_name(&model, MODEL_FILE).map_err(fail)?;
    for name in [MANIFEST_FILE, PROFILE_FILE] {
        let file = dir.join(name);
        if file.is_file() {
            builder.append_path_with_name(&file, name).map_err(fail)?;
        }
    }
    builder.into_inner().and_then(|gz| gz.finish()).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            // Write the name bytes directly: `set_path` refuses `..`, which is the point here.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            if kind.is_symlink() || kind.is_hard_link() {
                h.set_link_name("/etc/passwd").unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    const FILE: tar::EntryType = tar::EntryType::Regular;

    #[test]
    fn unpacks_root_or_one_top_directory_plain_or_gzipped() {
        let flat = tar_of(&[
            ("model.onnx", FILE, b"onnx"),
            ("vigil.toml", FILE, b"[labels]\n"),
            ("profile.json", FILE, b"{}"),
            ("README", FILE, b"x"),
        ]);
        for bytes in [flat.clone(), gz(&flat)] {
            let p = unpack(&bytes, &PackageLimits::default()).unwrap();
            assert_eq!(p.model, b"onnx");
            assert_eq!(p.manifest, "[labels]\n");
            assert_eq!(p.profile.as_deref(), Some("{}"));
        }
        let nested = tar_of(&[
            (
                "pax_global_header",
                tar::EntryType::XGlobalHeader,
                b"52 comment=0123456789abcdef0123456789abcdef01234567\n",
            ),
            ("fraud/", tar::EntryType::Directory, b""),
            ("fraud/model.onnx", FILE, b"m"),
        ]);
        let p = unpack(&nested, &PackageLimits::default()).unwrap();
        assert_eq!((p.model.as_slice(), p.manifest.as_str()), (&b"m"[..], ""));
    }

    #[test]
    fn hostile_archives_are_refused_with_a_reason() {
        let limits = PackageLimits { max_total_bytes: 1 << 20, max_entries: 8, max_manifest_bytes: 100 };
        let many: Vec<(String, tar::EntryType, &[u8])> = (0..20).map(|i| (format!("f{i}"), FILE, &b""[..])).collect();
        let many: Vec<(&str, tar::EntryType, &[u8])> = many.iter().map(|(p, k, d)| (p.as_str(), *k, *d)).collect();
        let big = vec![0u8; 2 << 20];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "empty"),
            (b"definitely not a tar archive, but long enough to look at".repeat(20), "tar"),
            (tar_of(&[("/etc/model.onnx", FILE, b"x")]), "absolute"),
            (tar_of(&[("../model.onnx", FILE, b"x")]), "leaves"),
            (tar_of(&[("a/../../model.onnx", FILE, b"x")]), "leaves"),
            (tar_of(&[("model.onnx", tar::EntryType::Symlink, b"")]), "link"),
            (tar_of(&[("model.onnx", tar::EntryType::Link, b"")]), "link"),
            (tar_of(&[("model.onnx", tar::EntryType::Fifo, b"")]), "special"),
            (tar_of(&[("model.onnx", tar::EntryType::Char, b"")]), "special"),
            (tar_of(&[("vigil.toml", FILE, b"")]), "no model.onnx"),
            (tar_of(&[("model.onnx", FILE, b"a"), ("./model.onnx", FILE, b"b")]), "more than one"),
            (tar_of(&[("a/model.onnx", FILE, b"a"), ("b/vigil.toml", FILE, b"b")]), "several top"),
            (tar_of(&[("model.onnx", FILE, b"a"), ("vigil.toml", FILE, &[b'#'; 200])]), "over 100 bytes"),
            (tar_of(&[("model.onnx", FILE, b"a"), ("vigil.toml", FILE, &[0xff, 0xfe])]), "UTF-8"),
            (tar_of(&[("model.onnx", FILE, b"a"), ("profile.json", FILE, &[0xff])]), "UTF-8"),
            (
                tar_of(&[("model.onnx", FILE, b"a"), ("profile.json", FILE, b"1"), ("./profile.json", FILE, b"2")]),
                "more than one profile.json",
            ),
            (tar_of(&[("m/model.onnx", FILE, b"a"), ("profile.json", FILE, b"{}")]), "not beside"),
            (tar_of(&many), "more than 8 entries"),
            (gz(&tar_of(&[("model.onnx", FILE, &big)])), "size limit"),
            (tar_of(&[("model.onnx", FILE, &big)]), "size limit"),
        ];
        for (bytes, needle) in cases {
            let e = unpack(&bytes, &limits).unwrap_err();
            assert!(e.message().contains(needle), "{needle}: {e}");
            assert!(e.message().starts_with("package: "), "{e}");
            let code = if needle == "size limit" { ErrorCode::PayloadTooLarge } else { ErrorCode::InvalidInput };
            assert_eq!(e.code(), code, "{e}");
        }
    }

    #[test]
    fn packages_as_tools_write_them() {
        let files = [("model.onnx", FILE, &b"onnx"[..]), ("vigil.toml", FILE, b"[labels]\n")];
        // `cat a.gz b.gz`: a tar stream split over two gzip members is read whole.
        let whole = tar_of(&files);
        let (head, rest) = whole.split_at(700);
        let mut joined = gz(head);
        joined.extend(gz(rest));
        let p = unpack(&joined, &PackageLimits::default()).unwrap();
        assert_eq!((p.model.as_slice(), p.manifest.as_str()), (&b"onnx"[..], "[labels]\n"));
        // `tar -C dir -czf p.tar.gz .`: entries under `./`, and `./` itself.
        let dotted = tar_of(&[
            ("./", tar::EntryType::Directory, b""),
            ("./model.onnx", FILE, b"onnx"),
            ("./vigil.toml", FILE, b"[labels]\n"),
        ]);
        let p = unpack(&gz(&dotted), &PackageLimits::default()).unwrap();
        assert_eq!((p.model.as_slice(), p.manifest.as_str()), (&b"onnx"[..], "[labels]\n"));
    }

    #[test]
    fn a_tar_stream_without_its_end_marker_is_refused() {
        let whole = tar_of(&[("model.onnx", FILE, b"onnx"), ("vigil.toml", FILE, b"[labels]\n")]);
        // Cut right after the first entry (header + one data block): a valid-looking shorter archive.
        let cut = &whole[..1024];
        for bytes in [cut.to_vec(), gz(cut)] {
            let e = unpack(&bytes, &PackageLimits::default()).unwrap_err();
            assert!(e.message().contains("no end marker"), "{e}");
        }
        // Only one of the two zero blocks.
        let mut one = tar_of(&[("model.onnx", FILE, b"onnx")]);
        one.truncate(1024 + 512);
        assert!(unpack(&one, &PackageLimits::default()).unwrap_err().message().contains("no end marker"));
        // Two archives joined: the second would be silently dropped.
        let mut two = tar_of(&[("model.onnx", FILE, b"onnx")]);
        two.extend(tar_of(&[("vigil.toml", FILE, b"x = 1")]));
        assert!(unpack(&two, &PackageLimits::default()).unwrap_err().message().contains("follows the archive's end"));
    }

    #[test]
    fn unpacking_takes_from_the_shared_memory_budget() {
        let archive = tar_of(&[("model.onnx", FILE, &[7u8; 4096])]);
        let budget = MemoryBudget::new(10_000);
        // A lone push whose body and unpacked model together pass the budget goes through.
        let big = tar_of(&[("model.onnx", FILE, &[7u8; 9_000])]);
        let body = budget.try_reserve(big.len() as u64).unwrap();
        assert!(unpack_within(&big, &PackageLimits::default(), &budget).is_ok());
        drop(body);
        let held = budget.try_reserve(8_000).unwrap();
        let e = unpack_within(&archive, &PackageLimits::default(), &budget).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Overloaded, "{e}");
        drop(held);
        let p = unpack_within(&archive, &PackageLimits::default(), &budget).unwrap();
        assert_eq!(budget.in_use(), 4096);
        drop(p);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let limits = PackageLimits { max_total_bytes: 1 << 20, ..PackageLimits::default() };
        let bomb = gz(&tar_of(&[("model.onnx", FILE, &vec![0u8; 64 << 20])]));
        assert!(bomb.len() < 1 << 20, "the bomb is small on the wire");
        assert!(unpack(&bomb, &limits).unwrap_err().message().contains("size limit"));
    }

    #[test]
    fn truncated_and_random_bytes_never_panic() {
        let good = gz(&tar_of(&[("model.onnx", FILE, b"onnx"), ("vigil.toml", FILE, b"")]));
        for n in 0..good.len() {
            let _ = unpack(&good[..n], &PackageLimits::default());
        }
        let mut x: u32 = 12345;
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..600)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = unpack(&bytes, &PackageLimits::default());
        }
    }
}
