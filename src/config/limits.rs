//! What reading one configuration file may cost: its size is capped before it is read, and a
//! document nested too deeply is refused before serde_yaml parses it. Both keep a hostile or
//! broken file from freezing the daemon or filling its memory.
//!
//! Measured with `camportal check` (release build) before these limits: a 52 MB file took 8 s
//! and 1.9 GB of memory. libyaml, under serde_yaml, spends time in proportion to the depth of
//! flow collections (`[…]`, `{…}`) on every token, so its time grows with the square of the
//! depth: `source: [[[…]]]` of 200 KB took 34 s; of 1 MiB, longer than 2 min. Block nesting
//! (indentation, `- - -`) costs time only in proportion to size (1 MiB nested in 0.44 s) but
//! twice the memory of a flat file (170 MB against 60–77 MB for 1 MiB), and serde_yaml's own
//! limit (128 levels) applies only after it has loaded the whole document. So both count
//! towards one limit, as they do for serde_yaml.

use std::fs::File;
use std::io::Read;
use std::mem::MaybeUninit;
use std::path::Path;

use super::error::ConfigError;

/// The largest configuration file read, in bytes (1 MiB). A path file is a dozen lines.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads the opened `f` (named `file` in errors) as UTF-8, refusing a file larger than
/// [`MAX_FILE_BYTES`]: a regular file by its size, before reading anything; any other (a pipe,
/// a device, a file growing meanwhile) by reading at most one byte more than the cap.
pub(super) fn read_capped(file: &Path, f: File) -> Result<String, ConfigError> {
    let size = f
        .metadata()
        .map_err(|e| ConfigError::new(file, format!("cannot read: {e}")))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(too_big(file, Some(size)));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ConfigError::new(file, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big(file, None));
    }
    String::from_utf8(bytes)
        .map_err(|_| ConfigError::new(file, "cannot read: the file is not valid UTF-8 text"))
}

fn too_big(file: &Path, size: Option<u64>) -> ConfigError {
    let size = size
        .map(|size| format!(" ({size} bytes)"))
        .unwrap_or_default();
    ConfigError::new(
        file,
        format!(
            "the file is too large{size}: a configuration file may be at most 1 MiB \
             ({MAX_FILE_BYTES} bytes)"
        ),
    )
}

/// How deeply collections may nest in a configuration file, block (indentation) and flow
/// (`[…]`, `{…}`) alike. Real files nest three or four levels.
pub(crate) const MAX_NESTING: usize = 32;

/// Refuses a document whose collections nest deeper than [`MAX_NESTING`], pointing at the one
/// that goes too deep. Costs one pass of libyaml's scanner, stopped there, so at most
/// `MAX_NESTING` levels' cost per token. A document that does not scan is left to serde_yaml,
/// which reports it: the scanner fails at the same place, having looked at most a line (and
/// at most 1 KB) beyond the last token it handed out, so that costs no more.
pub(super) fn check_nesting(file: &Path, text: &str) -> Result<(), ConfigError> {
    match first_too_deep(text, MAX_NESTING) {
        None => Ok(()),
        Some(mark) => Err(ConfigError {
            file: file.to_path_buf(),
            line: Some(mark.line as usize + 1),
            column: Some(mark.column as usize + 1),
            message: format!("nested deeper than {MAX_NESTING} levels"),
        }),
    }
}

/// Where (0-based) a collection first opens at depth `limit + 1`, if one does.
///
/// This uses libyaml's own scanner, the one serde_yaml parses with, rather than a look for
/// brackets and indentation of our own: whether a `[` opens a collection depends on all of
/// YAML's rules (quotes, comments, plain scalars going on over lines, block scalars and their
/// indentation), and any place where a hand-written look disagreed with libyaml would let a
/// deep document through.
fn first_too_deep(text: &str, limit: usize) -> Option<unsafe_libyaml::yaml_mark_t> {
    let mut scanner = Scanner::new(text);
    let mut depth = 0usize;
    loop {
        let (kind, mark) = scanner.next()?;
        match kind {
            unsafe_libyaml::YAML_FLOW_SEQUENCE_START_TOKEN
            | unsafe_libyaml::YAML_FLOW_MAPPING_START_TOKEN
            | unsafe_libyaml::YAML_BLOCK_SEQUENCE_START_TOKEN
            | unsafe_libyaml::YAML_BLOCK_MAPPING_START_TOKEN => {
                depth += 1;
                if depth > limit {
                    return Some(mark);
                }
            }
            unsafe_libyaml::YAML_FLOW_SEQUENCE_END_TOKEN
            | unsafe_libyaml::YAML_FLOW_MAPPING_END_TOKEN
            | unsafe_libyaml::YAML_BLOCK_END_TOKEN => {
                depth = depth.saturating_sub(1);
            }
            unsafe_libyaml::YAML_STREAM_END_TOKEN | unsafe_libyaml::YAML_NO_TOKEN => return None,
            _ => {}
        }
    }
}

/// libyaml's scanner over a string, token by token.
struct Scanner<'text> {
    /// Boxed: libyaml keeps a pointer to the parser inside it once its input is set, so it
    /// must not move. Initialised in `new`.
    parser: Box<MaybeUninit<unsafe_libyaml::yaml_parser_t>>,
    /// libyaml reads from the text until it is dropped.
    _text: std::marker::PhantomData<&'text str>,
}

impl<'text> Scanner<'text> {
    fn new(text: &'text str) -> Scanner<'text> {
        let mut parser = Box::new(MaybeUninit::<unsafe_libyaml::yaml_parser_t>::uninit());
        let p = parser.as_mut_ptr();
        // SAFETY: as serde_yaml does (src/libyaml/parser.rs): `yaml_parser_initialize` fills in
        // the whole struct (it always succeeds: allocation failure aborts); the input is the
        // text, which outlives the scanner (`'text`), and the parser stays where it is, boxed.
        unsafe {
            let _ = unsafe_libyaml::yaml_parser_initialize(p);
            unsafe_libyaml::yaml_parser_set_encoding(p, unsafe_libyaml::YAML_UTF8_ENCODING);
            unsafe_libyaml::yaml_parser_set_input_string(p, text.as_ptr(), text.len() as u64);
        }
        Scanner {
            parser,
            _text: std::marker::PhantomData,
        }
    }

    /// The next token's kind and start, or `None` if the text does not scan.
    fn next(
        &mut self,
    ) -> Option<(
        unsafe_libyaml::yaml_token_type_t,
        unsafe_libyaml::yaml_mark_t,
    )> {
        let mut token = MaybeUninit::<unsafe_libyaml::yaml_token_t>::uninit();
        // SAFETY: the parser is initialised (`new`). `yaml_parser_scan` clears the token before
        // anything else, so it is initialised whatever it returns; `yaml_token_delete` frees
        // what the token owns (a scalar's text), and nothing of it is used afterwards.
        unsafe {
            let failed =
                unsafe_libyaml::yaml_parser_scan(self.parser.as_mut_ptr(), token.as_mut_ptr()).fail;
            let token = token.assume_init_mut();
            let found = (token.type_, token.start_mark);
            unsafe_libyaml::yaml_token_delete(token);
            (!failed).then_some(found)
        }
    }
}

impl Drop for Scanner<'_> {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, deleted once, here.
        unsafe { unsafe_libyaml::yaml_parser_delete(self.parser.as_mut_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::config::parse_path_file;
    use crate::config::server::parse_server_file;

    fn nesting(text: &str) -> Result<(), String> {
        check_nesting(Path::new("x.yml"), text).map_err(|e| e.to_string())
    }

    fn brackets(open: &str, close: &str, depth: usize) -> String {
        format!("{}{}", open.repeat(depth), close.repeat(depth))
    }

    #[test]
    fn up_to_the_limit_passes_beyond_it_is_refused_where_it_happens() {
        // `a:` is a level (a block mapping) too.
        assert_eq!(nesting(&format!("a: {}\n", brackets("[", "]", 31))), Ok(()));
        assert_eq!(
            nesting(&format!("a: {}\n", brackets("[", "]", 32))),
            Err("x.yml:1:35: nested deeper than 32 levels".into())
        );
        assert_eq!(nesting(&brackets("[", "]", 32)), Ok(()));
        // Mappings count as well, mixed with sequences, and across lines.
        let e = nesting(&format!("a:\n  b: {}\n", brackets("{c: [", "]}", 17))).unwrap_err();
        assert!(e.starts_with("x.yml:2:"), "{e}");
        let e = nesting(&format!("a: {}\n", brackets("[\n", "]\n", 40))).unwrap_err();
        assert!(e.starts_with("x.yml:32:1: nested deeper"), "{e}");
        // Depth, not number: many collections side by side are fine.
        assert_eq!(
            nesting(&format!("a: [{}[]]\n", "[1, {b: 2}], ".repeat(500))),
            Ok(())
        );
        assert_eq!(nesting(&"- a: [1, {b: 2}]\n".repeat(500)), Ok(()));
    }

    #[test]
    fn block_nesting_counts_with_flow_nesting() {
        let indented = |depth: usize| -> String {
            (0..depth)
                .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
                .collect()
        };
        assert_eq!(nesting(&indented(32)), Ok(()));
        assert_eq!(
            nesting(&indented(33)),
            Err("x.yml:33:65: nested deeper than 32 levels".into())
        );
        assert_eq!(nesting(&format!("{}x\n", "- ".repeat(32))), Ok(()));
        assert_eq!(
            nesting(&format!("{}x\n", "- ".repeat(33))),
            Err("x.yml:1:65: nested deeper than 32 levels".into())
        );
        // Half and half.
        let e = nesting(&format!("{}{}\n", "- ".repeat(16), brackets("[", "]", 17))).unwrap_err();
        assert!(e.ends_with("nested deeper than 32 levels"), "{e}");
    }

    #[test]
    fn brackets_that_open_nothing_do_not_count() {
        let many = "[".repeat(100);
        for text in [
            format!("a: \"{many}\"\n"),
            format!("a: '{many}'\n"),
            format!("a: x # {many}\n"),
            format!("# {many}\na: 1\n"),
            format!("a: plain {many}\n"),
            format!("a: plain\n  continued {many}\n"),
            format!("a: |\n  {many}\n  {many}\nb: 1\n"),
            format!("a: >-\n    {many}\nb: 1\n"),
            format!("a: [\"{many}\", '{many}']\n"),
        ] {
            assert_eq!(nesting(&text), Ok(()), "{text}");
        }
    }

    #[test]
    fn what_libyaml_opens_counts_however_it_is_disguised() {
        // A block scalar ends where its indentation does: the brackets after it are YAML.
        let deep = "[".repeat(40);
        for text in [
            format!("a: |\n     text\n  {deep}\n"),
            format!("a: 'it''s'\nb: {deep}\n"),
            format!("a: \"\\\"\" # \"\nb: {deep}\n"),
            format!("a: x'\nb: {deep}{}\nc: y'\n", "]".repeat(40)),
        ] {
            assert!(nesting(&text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_deep_file_is_refused_in_milliseconds() {
        // The case: 200 KB of `source: [[[…]]]`, 22.5 s in `camportal check` before.
        // And the worst a file under the size cap can be.
        for size in [200_000, MAX_FILE_BYTES as usize] {
            let depth = (size - "source: \n".len()) / 2;
            let text = format!("source: {}\n", brackets("[", "]", depth));
            let started = Instant::now();
            let e = parse_path_file(Path::new("deep.yml"), &text).unwrap_err();
            let took = started.elapsed();
            eprintln!(
                "a {} byte file nested {depth} deep: refused in {:.2} ms",
                text.len(),
                took.as_secs_f64() * 1e3
            );
            assert_eq!(e.to_string(), "deep.yml:1:40: nested deeper than 32 levels");
            assert!(took.as_millis() < 500, "{took:?}");
        }
        let text = format!("webrtcAdditionalHosts: {}\n", brackets("[", "]", 100_000));
        let e = parse_server_file(Path::new("camportal.yml"), &text).unwrap_err();
        assert!(e.message.starts_with("nested deeper than 32 levels"), "{e}");
    }

    #[test]
    fn a_stream_is_read_no_further_than_the_cap() {
        // A device has no size to check first: reading stops one byte past the cap.
        let started = Instant::now();
        let e = read_capped(Path::new("/dev/zero"), File::open("/dev/zero").unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero: the file is too large: a configuration file may be at most 1 MiB \
             (1048576 bytes)"
        );
        eprintln!(
            "/dev/zero refused after {:.2} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
    }
}
