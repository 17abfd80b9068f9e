//! The book (`docs/book/`) cannot rot: every Rust listing in it is either a
//! doctest (each chapter is the documentation of a hidden item in
//! `ddpm/src/lib.rs`, so `cargo test -p ddpm --doc` compiles and runs it) or
//! an excerpt, marked `<!-- excerpt: PATH -->` on the line above, that must
//! appear verbatim in that file. This test checks the second kind and that
//! every chapter is wired up for the first.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("ddpm sits in the workspace").to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The chapter files, in reading order (their names start with the number).
fn chapters() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("docs/book"))
        .expect("docs/book exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    files.sort();
    files
}

/// A fenced block: its info string (`rust`, `rust,ignore`, `text`...), its
/// body, the excerpt marker above it if any, and its line in the chapter.
struct Listing {
    info: String,
    body: String,
    excerpt_of: Option<String>,
    line: usize,
}

fn listings(text: &str) -> Vec<Listing> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(info) = lines[i].strip_prefix("```") {
            let excerpt_of = i
                .checked_sub(1)
                .and_then(|j| lines[j].trim().strip_prefix("<!-- excerpt:"))
                .and_then(|rest| rest.strip_suffix("-->"))
                .map(|path| path.trim().to_string());
            let start = i + 1;
            let end = (start..lines.len()).find(|&j| lines[j].starts_with("```")).unwrap_or_else(|| panic!("unclosed block at line {}", i + 1));
            out.push(Listing { info: info.trim().to_string(), body: lines[start..end].join("\n"), excerpt_of, line: i + 1 });
            i = end + 1;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn there_are_eight_chapters_in_the_readme_order() {
    let names: Vec<String> = chapters().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 8, "{names:?}");
    let readme = read(&repo().join("docs/book/README.md"));
    let mut last = 0;
    for name in &names {
        let at = readme.find(&format!("({name})")).unwrap_or_else(|| panic!("docs/book/README.md does not link {name}"));
        assert!(at > last, "docs/book/README.md lists {name} out of order");
        last = at;
    }
}

#[test]
fn every_chapter_runs_as_doctests() {
    let lib = read(&repo().join("ddpm/src/lib.rs"));
    for chapter in chapters() {
        let name = chapter.file_name().unwrap().to_string_lossy().into_owned();
        let include = format!("include_str!(\"../../docs/book/{name}\")");
        assert!(lib.contains(&include), "ddpm/src/lib.rs does not include {name}, so its doctests would not run");
    }
}

#[test]
fn every_excerpt_appears_verbatim_and_every_other_rust_listing_is_a_doctest() {
    let mut excerpts = 0;
    for chapter in chapters() {
        let name = chapter.display().to_string();
        for listing in listings(&read(&chapter)) {
            let is_rust = listing.info.split(',').next() == Some("rust");
            match &listing.excerpt_of {
                Some(path) => {
                    let source = read(&repo().join(path));
                    assert!(!listing.body.trim().is_empty(), "{name}:{}: empty excerpt", listing.line);
                    assert!(source.contains(&listing.body), "{name}:{}: this excerpt is no longer in {path}:\n{}", listing.line, listing.body);
                    excerpts += 1;
                }
                None if is_rust => {
                    // Without a marker, a Rust listing must be a doctest that runs.
                    let flags: Vec<&str> = listing.info.split(',').skip(1).collect();
                    assert!(
                        flags.iter().all(|f| !matches!(*f, "ignore" | "no_run" | "compile_fail")),
                        "{name}:{}: a Rust listing that is neither run nor checked as an excerpt",
                        listing.line
                    );
                }
                None => {}
            }
        }
    }
    assert!(excerpts >= 10, "only {excerpts} excerpts found: is the marker format still `<!-- excerpt: PATH -->`?");
}

#[test]
fn the_listing_parser_sees_markers_and_flags() {
    let text = "intro\n<!-- excerpt: examples/tape.rs -->\n```rust,ignore\nlet a = 1;\n```\n```rust\nlet b = 2;\n```\n";
    let found = listings(text);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].excerpt_of.as_deref(), Some("examples/tape.rs"));
    assert_eq!((found[0].info.as_str(), found[0].body.as_str(), found[0].line), ("rust,ignore", "let a = 1;", 3));
    assert_eq!((found[1].excerpt_of.as_deref(), found[1].body.as_str()), (None, "let b = 2;"));
}
