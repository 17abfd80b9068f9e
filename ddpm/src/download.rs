//! Fetching Oxford Flowers 102 for users who have no pictures of their own.
//!
//! The archive is 330 MB, so every step is built to be safe to interrupt and repeat: the
//! download goes to a `.part` file that is only renamed once complete and checksum-verified,
//! and extraction goes to a hidden scratch folder that is renamed into place in one step, so a
//! half-extracted folder can never be mistaken for a finished one. The pieces (checksum,
//! extraction, fetch-and-extract from any URL or local file) are separate functions so that
//! they can be tested on a small archive without a network. The checksum is the SHA-256
//! recorded by TensorFlow Datasets for the official URL; the MD5 that torchvision publishes is
//! kept alongside for reference.
//!
//! The archive's images are one flat folder; their classes come in a second official file,
//! `imagelabels.mat` (a MATLAB array, read with the `matfile` crate). The images are then
//! hard-linked into one folder per class, `classes/<label>/`, the layout every class-conditional
//! recipe reads. Without the labels (a failed download), the flat folder is still returned.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::data::is_image_file;

/// The official Oxford Flowers 102 archive: `jpg/image_00001.jpg` .. `jpg/image_08189.jpg`.
pub const FLOWERS102_URL: &str = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz";
/// SHA-256 of [`FLOWERS102_URL`], from TensorFlow Datasets' `url_checksums/oxford_flowers102.txt`.
pub const FLOWERS102_SHA256: &str =
    "2d01ecc807db462958cfe3d92f57a8c252b4abd240eb955770201e45f783b246";
/// MD5 of [`FLOWERS102_URL`] as published by torchvision (not used for verification).
pub const FLOWERS102_MD5: &str = "52808999861908f626f3c1f4e79d11fa";
/// Size of the archive in bytes, used for the progress bar when the server sends no length.
pub const FLOWERS102_BYTES: u64 = 344_862_509;
/// The official class labels: `labels`, a 1 x 8189 array of classes 1..=102, one per image
/// in name order.
pub const FLOWERS102_LABELS_URL: &str = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/imagelabels.mat";
/// SHA-256 of [`FLOWERS102_LABELS_URL`] (torchvision publishes its MD5, `e0620be6f572b9609742df49c70aed4d`).
pub const FLOWERS102_LABELS_SHA256: &str =
    "4903e94206bac23bf772aadf06451916df56b58fc483a62db32a97b82656651d";

/// Where the dataset's two files come from: the official addresses, or (in tests) local files.
#[derive(Debug, Clone, Copy)]
pub struct Flowers102Sources<'a> {
    pub images: &'a str,
    pub images_sha256: &'a str,
    pub labels: &'a str,
    pub labels_sha256: &'a str,
}

/// The official archive and labels.
pub const FLOWERS102_OFFICIAL: Flowers102Sources<'static> = Flowers102Sources {
    images: FLOWERS102_URL,
    images_sha256: FLOWERS102_SHA256,
    labels: FLOWERS102_LABELS_URL,
    labels_sha256: FLOWERS102_LABELS_SHA256,
};

/// Why the dataset could not be fetched or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(
        "the download from {url} failed ({reason}); check your connection, or pass \
         --data DIR pointing at a folder of flower images"
    )]
    Network { url: String, reason: String },
    #[error("checksum mismatch for {}: expected sha256 {expected}, got {got}", path.display())]
    Checksum {
        path: PathBuf,
        expected: String,
        got: String,
    },
    #[error("could not extract {}: {source}", archive.display())]
    Extract {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} exists but holds no images; delete it to download the dataset again",
        .0.display()
    )]
    Occupied(PathBuf),
    #[error("could not read the class labels in {}: {reason}", path.display())]
    Labels { path: PathBuf, reason: String },
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DownloadError {
    let path = path.to_path_buf();
    move |source| DownloadError::Io {
        action,
        path,
        source,
    }
}

/// petal's cache folder: `$XDG_CACHE_HOME/petal`, else `~/.cache/petal`
/// (downloads, and the reference statistics of `ddpm score`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("petal")
}

/// Returns the folder of Flowers 102 images under `cache_dir`, downloading it first if needed:
/// `cache_dir/flowers102/classes` (one folder per class), or `cache_dir/flowers102/jpg` (flat)
/// when the labels could not be had.
pub fn ensure_flowers102(cache_dir: &Path) -> Result<PathBuf, DownloadError> {
    ensure_flowers102_from(cache_dir, &FLOWERS102_OFFICIAL)
}

/// [`ensure_flowers102`] with the files taken from `sources`.
pub fn ensure_flowers102_from(cache_dir: &Path, sources: &Flowers102Sources) -> Result<PathBuf, DownloadError> {
    let root = cache_dir.join("flowers102");
    let classes = root.join("classes");
    if has_class_folders(&classes) {
        return Ok(classes);
    }
    let jpg = root.join("jpg");
    if !has_images(&jpg) {
        eprintln!(
            "Oxford Flowers 102 not found under {}; downloading {} (about 330 MB)",
            cache_dir.display(),
            sources.images
        );
        fetch_and_extract(sources.images, sources.images_sha256, &root)?;
        if !has_images(&jpg) {
            return Err(DownloadError::Occupied(root));
        }
    }
    match sort_into_classes(&root, &jpg, sources) {
        Ok(dir) => Ok(dir),
        Err(e) => {
            eprintln!("warning: {e}; using the images without their classes (a class-conditional recipe trains unconditionally)");
            Ok(jpg)
        }
    }
}

/// True when `dir` holds at least one subfolder with an image in it.
fn has_class_folders(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).any(|e| has_images(&e.path())))
        .unwrap_or(false)
}

/// Fetches the labels and hard-links (or copies) every image of `jpg` into
/// `root/classes/<label>/`, all at once through a scratch folder.
fn sort_into_classes(root: &Path, jpg: &Path, sources: &Flowers102Sources) -> Result<PathBuf, DownloadError> {
    let labels_path = fetch_file(sources.labels, sources.labels_sha256, &root.join("imagelabels.mat"))?;
    let labels = read_labels(&labels_path)?;
    let mut images: Vec<PathBuf> = fs::read_dir(jpg)
        .map_err(io_err("read", jpg))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| is_image_file(p))
        .collect();
    images.sort();
    if images.len() != labels.len() {
        return Err(DownloadError::Labels {
            path: labels_path,
            reason: format!("{} labels for {} images in {}", labels.len(), images.len(), jpg.display()),
        });
    }
    let scratch = root.join(".classes.partial");
    if scratch.exists() {
        fs::remove_dir_all(&scratch).map_err(io_err("remove stale folder", &scratch))?;
    }
    for (image, label) in images.iter().zip(&labels) {
        let dir = scratch.join(label.to_string());
        fs::create_dir_all(&dir).map_err(io_err("create folder", &dir))?;
        let target = dir.join(image.file_name().expect("a listed file has a name"));
        // A hard link costs no space; a file system without them gets a copy.
        if fs::hard_link(image, &target).is_err() {
            fs::copy(image, &target).map_err(io_err("copy", image))?;
        }
    }
    let classes = root.join("classes");
    fs::rename(&scratch, &classes).map_err(io_err("move class folders into", &classes))?;
    Ok(classes)
}

/// The `labels` array of a Flowers 102 `imagelabels.mat`: positive whole numbers.
pub fn read_labels(path: &Path) -> Result<Vec<u32>, DownloadError> {
    let bad = |reason: String| DownloadError::Labels { path: path.to_path_buf(), reason };
    let file = File::open(path).map_err(io_err("open", path))?;
    let mat = matfile::MatFile::parse(BufReader::new(file)).map_err(|e| bad(format!("not a MATLAB file ({e})")))?;
    let array = mat.find_by_name("labels").ok_or_else(|| bad("no array named `labels`".into()))?;
    let values: Vec<f64> = match array.data() {
        matfile::NumericData::Double { real, .. } => real.clone(),
        matfile::NumericData::UInt8 { real, .. } => real.iter().map(|&v| v as f64).collect(),
        matfile::NumericData::Int32 { real, .. } => real.iter().map(|&v| v as f64).collect(),
        other => return Err(bad(format!("`labels` has an unexpected type ({other:?})"))),
    };
    values
        .iter()
        .map(|&v| {
            if v >= 1.0 && v.fract() == 0.0 && v <= u32::MAX as f64 {
                Ok(v as u32)
            } else {
                Err(bad(format!("`labels` holds {v}, not a class number")))
            }
        })
        .collect()
}

/// Fetches one file to `dest` (kept only once its SHA-256 matches); an existing verified
/// `dest` is reused. `source` is a URL or a local path, as for [`fetch_and_extract`].
pub fn fetch_file(source: &str, expected_sha256: &str, dest: &Path) -> Result<PathBuf, DownloadError> {
    if dest.is_file() && verify_checksum(dest, expected_sha256).is_ok() {
        return Ok(dest.to_path_buf());
    }
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "download".into());
    let part = dest.with_file_name(format!("{name}.part"));
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err("create folder", parent))?;
    }
    match local_path(source) {
        Some(path) => {
            verify_checksum(&path, expected_sha256)?;
            fs::copy(&path, &part).map_err(io_err("copy", &path))?;
        }
        None => {
            download(source, &part, 0)?;
            if let Err(e) = verify_checksum(&part, expected_sha256) {
                let _ = fs::remove_file(&part);
                return Err(e);
            }
        }
    }
    fs::rename(&part, dest).map_err(io_err("rename", &part))?;
    Ok(dest.to_path_buf())
}

/// True when `dir` is a folder with at least one `.jpg/.jpeg/.png` file directly inside.
pub fn has_images(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| is_image_file(&e.path()))
        })
        .unwrap_or(false)
}

/// Fetches the `.tgz` at `source`, checks its SHA-256 against `expected_sha256` (hex) and
/// extracts it so that its contents appear at `dest` all at once. Returns `dest`.
///
/// `source` may be an `http://` or `https://` URL, a `file://` URL or a plain local path.
/// A download goes to `<name>.part` next to `dest`, becomes `<name>` once verified, and is
/// deleted after a successful extraction; a local archive is read in place and kept. An
/// existing, non-empty `dest` is never overwritten: it is returned as is.
pub fn fetch_and_extract(
    source: &str,
    expected_sha256: &str,
    dest: &Path,
) -> Result<PathBuf, DownloadError> {
    if dest.exists() {
        let is_empty_dir = dest.is_dir()
            && fs::read_dir(dest)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !is_empty_dir {
            return Ok(dest.to_path_buf());
        }
        fs::remove_dir(dest).map_err(io_err("remove empty folder", dest))?;
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_err("create folder", &parent))?;

    let local = local_path(source);
    let (archive, downloaded) = match local {
        Some(path) => {
            verify_checksum(&path, expected_sha256)?;
            (path, false)
        }
        None => {
            let name = source
                .rsplit('/')
                .next()
                .filter(|n| !n.is_empty())
                .unwrap_or("download.tgz");
            let archive = parent.join(name);
            // A verified archive left by an earlier run that failed during extraction.
            let reusable = archive.is_file() && verify_checksum(&archive, expected_sha256).is_ok();
            if !reusable {
                let part = parent.join(format!("{name}.part"));
                download(source, &part, FLOWERS102_BYTES)?;
                if let Err(e) = verify_checksum(&part, expected_sha256) {
                    let _ = fs::remove_file(&part);
                    return Err(e);
                }
                fs::rename(&part, &archive).map_err(io_err("rename", &part))?;
            }
            (archive, true)
        }
    };

    let dest_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "extracted".into());
    let scratch = parent.join(format!(".{dest_name}.partial"));
    if scratch.exists() {
        fs::remove_dir_all(&scratch).map_err(io_err("remove stale folder", &scratch))?;
    }
    if let Err(e) = extract_tgz(&archive, &scratch) {
        let _ = fs::remove_dir_all(&scratch);
        return Err(e);
    }
    fs::rename(&scratch, dest).map_err(io_err("move extracted files into", dest))?;
    if downloaded {
        // The extracted images are the same size again; keeping both would waste 330 MB.
        let _ = fs::remove_file(&archive);
    }
    Ok(dest.to_path_buf())
}

/// The local file behind `source`, or `None` when it is an http(s) URL.
fn local_path(source: &str) -> Option<PathBuf> {
    if let Some(rest) = source.strip_prefix("file://") {
        // `file:///abs/path` and `file://localhost/abs/path` both mean `/abs/path`.
        let rest = rest.strip_prefix("localhost").unwrap_or(rest);
        return Some(PathBuf::from(rest));
    }
    if source.starts_with("http://") || source.starts_with("https://") {
        return None;
    }
    Some(PathBuf::from(source))
}

/// Streams `url` into `part`, with a progress bar (bytes, rate, ETA) on stderr;
/// `expected_bytes` sizes the bar when the server sends no length.
fn download(url: &str, part: &Path, expected_bytes: u64) -> Result<(), DownloadError> {
    let network = |reason: String| DownloadError::Network {
        url: url.to_string(),
        reason,
    };
    let response = ureq::get(url).call().map_err(|e| network(e.to_string()))?;
    let total = response.body().content_length();
    let mut body = response.into_body().into_reader();

    let bar = ProgressBar::new(total.unwrap_or(expected_bytes));
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .expect("valid progress template")
        .progress_chars("=> "),
    );
    bar.set_message("downloading");

    let result = (|| {
        let mut out = BufWriter::new(File::create(part).map_err(io_err("create", part))?);
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(network(format!("after {got} bytes: {e}"))),
            };
            out.write_all(&buf[..n]).map_err(io_err("write", part))?;
            got += n as u64;
            bar.set_position(got);
        }
        out.flush().map_err(io_err("write", part))?;
        if let Some(total) = total {
            if got != total {
                return Err(network(format!("got {got} of {total} bytes")));
            }
        }
        Ok(())
    })();
    bar.finish_and_clear();
    if result.is_err() {
        let _ = fs::remove_file(part);
    }
    result
}

/// The SHA-256 of a file as lowercase hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut hasher = Sha256::new();
    io::copy(&mut reader, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks that the file at `path` has the SHA-256 `expected_hex` (any letter case).
pub fn verify_checksum(path: &Path, expected_hex: &str) -> Result<(), DownloadError> {
    let got = sha256_file(path).map_err(io_err("read", path))?;
    if got.eq_ignore_ascii_case(expected_hex.trim()) {
        Ok(())
    } else {
        Err(DownloadError::Checksum {
            path: path.to_path_buf(),
            expected: expected_hex.trim().to_ascii_lowercase(),
            got,
        })
    }
}

/// Unpacks a gzip-compressed tar archive into `dest` (created if missing).
///
/// Entries that would land outside `dest` (absolute paths, `..`) are refused by `tar`.
/// A truncated or corrupt archive is an error, though files before the damage may remain;
/// callers extract into a scratch folder for that reason.
pub fn extract_tgz(archive: &Path, dest: &Path) -> Result<(), DownloadError> {
    let extract = |source| DownloadError::Extract {
        archive: archive.to_path_buf(),
        source,
    };
    fs::create_dir_all(dest).map_err(io_err("create folder", dest))?;
    let file = File::open(archive).map_err(extract)?;
    let gz = flate2::read::GzDecoder::new(BufReader::with_capacity(1 << 20, file));
    let mut tar = tar::Archive::new(gz);
    tar.set_preserve_permissions(false);
    tar.unpack(dest).map_err(extract)?;
    // `tar` stops at the end-of-archive marker; a damaged gzip trailer after it must still fail.
    let mut rest = tar.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(extract)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    use crate::test_util::TempDir;

    fn png_bytes(color: [u8; 3]) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(3, 2, image::Rgb(color));
        let mut out = io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    /// A .tgz with `jpg/image_00001.png` (red) and `jpg/image_00002.png` (blue).
    fn tiny_tgz() -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut builder = tar::Builder::new(gz);
        for (name, color) in [
            ("jpg/image_00001.png", [255, 0, 0]),
            ("jpg/image_00002.png", [0, 0, 255]),
        ] {
            let data = png_bytes(color);
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, name, data.as_slice())
                .unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn check_extracted(dest: &Path) {
        let jpg = dest.join("jpg");
        let mut names = leftovers(&jpg);
        names.sort();
        assert_eq!(names, ["image_00001.png", "image_00002.png"]);
        let red = image::open(jpg.join("image_00001.png")).unwrap().to_rgb8();
        assert_eq!(red.dimensions(), (3, 2));
        assert_eq!(red.get_pixel(0, 0).0, [255, 0, 0]);
        assert!(has_images(&jpg));
    }

    #[test]
    fn checksum_of_known_bytes() {
        let t = TempDir::new("download-sum");
        let f = t.0.join("abc");
        fs::write(&f, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&f).unwrap(), abc);
        verify_checksum(&f, &abc.to_ascii_uppercase()).unwrap();
        let err = verify_checksum(&f, &"0".repeat(64))
            .unwrap_err()
            .to_string();
        assert!(err.contains(abc) && err.contains(&"0".repeat(64)), "{err}");
    }

    #[test]
    fn local_archive_by_path_and_file_url() {
        let t = TempDir::new("download-local");
        let bytes = tiny_tgz();
        let archive = t.0.join("flowers.tgz");
        fs::write(&archive, &bytes).unwrap();
        let sum = sha256_hex(&bytes);

        let dest = t.0.join("cache/flowers102");
        let got = fetch_and_extract(archive.to_str().unwrap(), &sum, &dest).unwrap();
        assert_eq!(got, dest);
        check_extracted(&dest);
        assert!(
            archive.exists(),
            "a local archive is the user's and must be kept"
        );
        assert_eq!(leftovers(&t.0.join("cache")), ["flowers102"]);

        let dest2 = t.0.join("cache2/flowers102");
        let url = format!("file://{}", archive.display());
        fetch_and_extract(&url, &sum, &dest2).unwrap();
        check_extracted(&dest2);
        // A second call finds the finished folder and does nothing.
        fetch_and_extract(&url, &sum, &dest2).unwrap();
    }

    #[test]
    fn wrong_checksum_extracts_nothing() {
        let t = TempDir::new("download-badsum");
        let archive = t.0.join("flowers.tgz");
        fs::write(&archive, tiny_tgz()).unwrap();
        let dest = t.0.join("cache/flowers102");
        let wrong = "f".repeat(64);
        let err = fetch_and_extract(archive.to_str().unwrap(), &wrong, &dest).unwrap_err();
        assert!(matches!(err, DownloadError::Checksum { .. }), "{err:?}");
        assert!(err.to_string().contains(&wrong), "{err}");
        assert!(!dest.exists());
        assert!(leftovers(&t.0.join("cache")).is_empty());
    }

    #[test]
    fn truncated_archive_is_an_error_and_leaves_no_folder() {
        let t = TempDir::new("download-trunc");
        let bytes = tiny_tgz();
        for keep in [bytes.len() / 2, bytes.len() - 4] {
            let cut = &bytes[..keep];
            let archive = t.0.join(format!("cut-{keep}.tgz"));
            fs::write(&archive, cut).unwrap();
            let dest = t.0.join(format!("cache-{keep}/flowers102"));
            let err =
                fetch_and_extract(archive.to_str().unwrap(), &sha256_hex(cut), &dest).unwrap_err();
            assert!(
                matches!(err, DownloadError::Extract { .. }),
                "{keep}: {err:?}"
            );
            assert!(!dest.exists());
            assert!(leftovers(&t.0.join(format!("cache-{keep}"))).is_empty());
        }
    }

    /// Serves `body` once over HTTP/1.1 on a local port and returns the URL.
    fn serve_once(body: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                request.push(byte[0]);
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&body).unwrap();
        });
        format!("http://127.0.0.1:{port}/flowers.tgz")
    }

    #[test]
    fn http_download_is_verified_extracted_and_cleaned_up() {
        let t = TempDir::new("download-http");
        let bytes = tiny_tgz();
        let url = serve_once(bytes.clone());
        let dest = t.0.join("cache/flowers102");
        fetch_and_extract(&url, &sha256_hex(&bytes), &dest).unwrap();
        check_extracted(&dest);
        assert_eq!(leftovers(&t.0.join("cache")), ["flowers102"]);
    }

    #[test]
    fn http_download_with_wrong_checksum_deletes_the_part_file() {
        let t = TempDir::new("download-http-bad");
        let url = serve_once(tiny_tgz());
        let dest = t.0.join("cache/flowers102");
        let err = fetch_and_extract(&url, &"a".repeat(64), &dest).unwrap_err();
        assert!(matches!(err, DownloadError::Checksum { .. }), "{err:?}");
        assert!(leftovers(&t.0.join("cache")).is_empty());
    }

    #[test]
    fn unreachable_server_suggests_data_flag() {
        let t = TempDir::new("download-offline");
        // Bind then drop a listener: nothing is listening on that port any more.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/102flowers.tgz");
        let err = fetch_and_extract(&url, FLOWERS102_SHA256, &t.0.join("flowers102")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DownloadError::Network { .. }), "{err:?}");
        assert!(msg.contains(&url) && msg.contains("--data DIR"), "{msg}");
        assert!(leftovers(&t.0).is_empty());
    }

    /// A MATLAB 5 file holding one uncompressed 1 x n double array `labels`.
    fn labels_mat(labels: &[f64]) -> Vec<u8> {
        let mut out = b"MATLAB 5.0 MAT-file, written by the petal tests".to_vec();
        out.resize(116, b' ');
        out.extend([0u8; 8]); // no subsystem data
        out.extend(0x0100u16.to_le_bytes());
        out.extend(b"IM"); // little-endian
        let mut body = Vec::new();
        let mut element = |ty: u32, data: &[u8]| {
            body.extend(ty.to_le_bytes());
            body.extend((data.len() as u32).to_le_bytes());
            body.extend(data);
            body.resize(body.len().div_ceil(8) * 8, 0);
        };
        element(6, &[6u32.to_le_bytes(), 0u32.to_le_bytes()].concat()); // array flags: double
        element(5, &[1i32.to_le_bytes(), (labels.len() as i32).to_le_bytes()].concat()); // 1 x n
        element(1, b"labels");
        element(9, &labels.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
        out.extend(14u32.to_le_bytes()); // a matrix
        out.extend((body.len() as u32).to_le_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn labels_sort_the_download_into_class_folders() {
        let t = TempDir::new("download-labels");
        let (archive, labels) = (t.0.join("flowers.tgz"), t.0.join("labels.mat"));
        fs::write(&archive, tiny_tgz()).unwrap();
        fs::write(&labels, labels_mat(&[7.0, 2.0])).unwrap();
        let (archive_sha, labels_sha) = (sha256_file(&archive).unwrap(), sha256_file(&labels).unwrap());
        let sources = Flowers102Sources {
            images: archive.to_str().unwrap(),
            images_sha256: &archive_sha,
            labels: labels.to_str().unwrap(),
            labels_sha256: &labels_sha,
        };
        let cache = t.0.join("cache");
        let classes = ensure_flowers102_from(&cache, &sources).unwrap();
        assert_eq!(classes, cache.join("flowers102/classes"));
        assert!(classes.join("7/image_00001.png").is_file() && classes.join("2/image_00002.png").is_file());
        assert_eq!(read_labels(&cache.join("flowers102/imagelabels.mat")).unwrap(), vec![7, 2]);
        assert!(!cache.join("flowers102/.classes.partial").exists());
        // A second call finds the class folders and fetches nothing.
        fs::remove_file(&labels).unwrap();
        assert_eq!(ensure_flowers102_from(&cache, &sources).unwrap(), classes);
    }

    #[test]
    fn bad_labels_name_the_file_and_leave_the_flat_folder() {
        let t = TempDir::new("download-bad-labels");
        let jpg = t.0.join("flowers102/jpg");
        fs::create_dir_all(&jpg).unwrap();
        fs::write(jpg.join("image_00001.png"), png_bytes([1, 2, 3])).unwrap();
        let labels = t.0.join("labels.mat");
        for (bytes, why) in [
            (labels_mat(&[1.0, 2.0]), "2 labels for 1 images"),
            (labels_mat(&[0.5]), "not a class number"),
            (b"not a mat file".to_vec(), "not a MATLAB file"),
        ] {
            fs::write(&labels, bytes).unwrap();
            let sha = sha256_file(&labels).unwrap();
            let sources = Flowers102Sources { images: "unused.tgz", images_sha256: "0", labels: labels.to_str().unwrap(), labels_sha256: &sha };
            let msg = sort_into_classes(&t.0.join("flowers102"), &jpg, &sources).unwrap_err().to_string();
            assert!(msg.contains(why) && msg.contains("imagelabels.mat"), "{msg}");
            assert_eq!(ensure_flowers102_from(&t.0, &sources).unwrap(), jpg);
            assert!(!t.0.join("flowers102/classes").exists());
        }
    }

    #[test]
    fn ensure_uses_an_existing_folder_without_network() {
        let t = TempDir::new("download-ensure");
        let jpg = t.0.join("flowers102/jpg");
        fs::create_dir_all(&jpg).unwrap();
        fs::write(jpg.join("image_00001.png"), png_bytes([1, 2, 3])).unwrap();
        // The labels cannot be had (a missing local file): the flat folder is the answer.
        let missing = t.0.join("missing.mat");
        let sources = Flowers102Sources { labels: missing.to_str().unwrap(), ..FLOWERS102_OFFICIAL };
        assert_eq!(ensure_flowers102_from(&t.0, &sources).unwrap(), jpg);
    }
}
