//! Recorded prompts for playback (SPEC F-M6): a library of headerless G.711
//! clips by language, name and law, plus a small G.711 decoder (ITU-T G.711
//! §3, the segment tables of the classic `g711.c`).
//!
//! The library is built once at startup and then only read: a clip is an
//! `Arc<[u8]>` that a [`crate::media::play::Player`] shares without copying.
//! [`PromptLibrary::load`] is the only function here that touches the file
//! system; it reads a directory laid out as
//!
//! ```text
//! <dir>/<lang>/<name>.ul   G.711 µ-law (PCMU), 8 kHz mono, no header
//! <dir>/<lang>/<name>.al   G.711 A-law (PCMA), 8 kHz mono, no header
//! ```
//!
//! and hands the bytes to [`PromptLibrary::insert`], which a test can call
//! with values alone. The repository ships English and Russian prompts in
//! `config/prompts/` (made by `config/prompts/generate.sh`); see
//! [`PromptLibrary::default_dir`].
//!
//! What this does not do: no WAV or other container parsing, no transcoding
//! between the laws (each law is its own file), no sample-rate conversion.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes in one 20 ms G.711 frame at 8 kHz: what one RTP packet carries.
pub const FRAME_BYTES: usize = 160;

/// Largest clip file accepted: 2 MiB is over four minutes of G.711, far more
/// than any prompt; a larger file is a mistake (a WAV of music, a wrong
/// directory), so it is refused rather than held in memory on every shard.
pub const CLIP_BYTES_MAX: u64 = 2 * 1024 * 1024;

/// Most clips (files) one library holds, all languages and both laws
/// together. The shipped set is 64; the cap keeps a mistaken directory from
/// being read whole.
pub const CLIPS_MAX: usize = 4096;

/// Longest language or clip name, in bytes.
pub const NAME_LEN_MAX: usize = 64;

/// A G.711 companding law.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Law {
    /// µ-law, RTP payload type 0 (PCMU), file extension `ul`.
    Mu,
    /// A-law, RTP payload type 8 (PCMA), file extension `al`.
    A,
}

impl Law {
    /// Both laws, in index order.
    pub const ALL: [Law; 2] = [Law::Mu, Law::A];

    /// The file extension of a clip in this law.
    pub fn extension(self) -> &'static str {
        match self {
            Law::Mu => "ul",
            Law::A => "al",
        }
    }

    /// The law whose clips carry `ext` (`ul` or `al`), if any.
    pub fn from_extension(ext: &str) -> Option<Law> {
        match ext {
            "ul" => Some(Law::Mu),
            "al" => Some(Law::A),
            _ => None,
        }
    }

    /// The static RTP payload type of this law (RFC 3551 §6, table 4).
    pub fn payload_type(self) -> u8 {
        match self {
            Law::Mu => 0,
            Law::A => 8,
        }
    }

    /// The law of a static payload type: 0 is PCMU, 8 is PCMA.
    pub fn from_payload_type(pt: u8) -> Option<Law> {
        match pt {
            0 => Some(Law::Mu),
            8 => Some(Law::A),
            _ => None,
        }
    }

    /// The code of a zero sample: what silence is made of (0xFF for µ-law,
    /// 0xD5 for A-law, the even-bit inverted 0x80).
    pub fn silence_byte(self) -> u8 {
        match self {
            Law::Mu => 0xff,
            Law::A => 0xd5,
        }
    }

    /// Decode one code to a 16-bit linear sample.
    #[inline]
    pub fn decode(self, code: u8) -> i16 {
        match self {
            Law::Mu => ulaw_to_linear(code),
            Law::A => alaw_to_linear(code),
        }
    }

    fn index(self) -> usize {
        match self {
            Law::Mu => 0,
            Law::A => 1,
        }
    }
}

/// Decode a G.711 µ-law code to a 16-bit linear sample (the inverse of the
/// encoder in `config/prompts/wav2g711.py`; 0xFF and 0x7F decode to 0).
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i16::from(u & 0x0f);
    // ((mantissa << 3) + bias) << exponent, minus the bias: at most 32124.
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if u & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// Decode a G.711 A-law code to a 16-bit linear sample (0xD5 and 0x55
/// decode to ±8, the smallest A-law step).
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let segment = (a >> 4) & 0x07;
    let mut t = i16::from(a & 0x0f) << 4;
    match segment {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (segment - 1),
    }
    if a & 0x80 != 0 {
        t
    } else {
        -t
    }
}

/// Why a prompt directory could not be loaded. Every variant names the path
/// at fault so an operator can fix it from the message alone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromptError {
    /// The directory (or a language directory in it) could not be listed:
    /// missing, not a directory, or not readable.
    #[error("prompt directory {}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A clip file could not be read.
    #[error("prompt file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A clip file has no bytes.
    #[error("prompt file {} is empty", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A clip file is larger than [`CLIP_BYTES_MAX`].
    #[error("prompt file {} is {len} bytes, more than the {CLIP_BYTES_MAX} allowed", path.display())]
    TooBig {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// A `.ul`/`.al` file or language whose name is not 1 to
    /// [`NAME_LEN_MAX`] bytes of ASCII letters, digits, `-` and `_`.
    #[error("prompt file {}: name must be ASCII letters, digits, '-' or '_'", path.display())]
    BadName {
        /// The file.
        path: PathBuf,
    },
    /// More than [`CLIPS_MAX`] clips.
    #[error("prompt directory {} has more than {CLIPS_MAX} clips", path.display())]
    TooMany {
        /// The directory.
        path: PathBuf,
    },
    /// The directory holds no clip at all.
    #[error("prompt directory {} has no <lang>/<name>.ul or .al clips", path.display())]
    NoClips {
        /// The directory.
        path: PathBuf,
    },
}

/// One clip name's two laws.
type ClipPair = [Option<Arc<[u8]>>; 2];

/// Prompts by language and name, both G.711 laws; read-only once built.
///
/// Lookups borrow `&str` keys and never allocate.
#[derive(Clone, Debug, Default)]
pub struct PromptLibrary {
    langs: BTreeMap<String, BTreeMap<String, ClipPair>>,
    clips: usize,
}

impl PromptLibrary {
    /// The repository's shipped prompts, `config/prompts` under the source
    /// tree this crate was built from. Meant for tests and demos: an
    /// installed gateway names its prompt directory in its configuration.
    pub fn default_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prompts")
    }

    /// The prompts built into the binary (`config/prompts/` at build time).
    pub fn embedded() -> PromptLibrary {
        let mut lib = PromptLibrary::default();
        for (lang, name, ext, bytes) in super::prompt_embedded::EMBEDDED {
            if let Some(law) = Law::from_extension(ext) {
                // The files were checked by the tests that load the
                // directory; a bad one is skipped rather than fatal.
                let _ = lib.insert(lang, name, law, bytes.to_vec());
            }
        }
        lib
    }

    /// [`load`](Self::load) the [`default_dir`](Self::default_dir).
    pub fn load_default() -> Result<PromptLibrary, PromptError> {
        PromptLibrary::load(&PromptLibrary::default_dir())
    }

    /// Read every `<dir>/<lang>/<name>.ul` and `.al`.
    ///
    /// Sub-directories whose names do not look like a language (hidden,
    /// starting with `_`, such as `__pycache__`) and files with other
    /// extensions (the generator script, READMEs) are skipped. A clip whose
    /// length is not a whole number of 20 ms frames is padded with the law's
    /// silence; see [`insert`](Self::insert) for the other rules.
    pub fn load(dir: &Path) -> Result<PromptLibrary, PromptError> {
        let mut lib = PromptLibrary::default();
        let dir_err = |source| PromptError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        let mut lang_dirs = Vec::new();
        for entry in fs::read_dir(dir).map_err(dir_err)? {
            let entry = entry.map_err(dir_err)?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if valid_lang(&name) && path.is_dir() {
                lang_dirs.push((name, path));
            }
        }
        // Sorted so errors and limits hit the same file on every run.
        lang_dirs.sort();
        for (lang, lang_dir) in lang_dirs {
            let lang_err = |source| PromptError::Dir {
                path: lang_dir.clone(),
                source,
            };
            let mut files = Vec::new();
            for entry in fs::read_dir(&lang_dir).map_err(lang_err)? {
                let path = entry.map_err(lang_err)?.path();
                let Some(law) = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .and_then(Law::from_extension)
                else {
                    continue;
                };
                if path.is_dir() {
                    continue;
                }
                files.push((path, law));
            }
            files.sort();
            for (path, law) in files {
                let Some(name) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .filter(|s| valid_name(s))
                    .map(str::to_owned)
                else {
                    return Err(PromptError::BadName { path });
                };
                if lib.clips >= CLIPS_MAX {
                    return Err(PromptError::TooMany {
                        path: dir.to_path_buf(),
                    });
                }
                let bytes = read_clip(&path)?;
                lib.insert(&lang, &name, law, bytes)
                    .map_err(|e| e.at(path.clone()))?;
            }
        }
        if lib.clips == 0 {
            return Err(PromptError::NoClips {
                path: dir.to_path_buf(),
            });
        }
        Ok(lib)
    }

    /// Add (or replace) one clip from memory. The bytes must be 1 to
    /// [`CLIP_BYTES_MAX`]; they are padded with [`Law::silence_byte`] to a
    /// multiple of [`FRAME_BYTES`] so that every packet of the clip is
    /// full. Errors carry an empty path, since there is no file.
    pub fn insert(
        &mut self,
        lang: &str,
        name: &str,
        law: Law,
        mut bytes: Vec<u8>,
    ) -> Result<(), PromptError> {
        let nowhere = PathBuf::new;
        if !valid_lang(lang) || !valid_name(name) {
            return Err(PromptError::BadName { path: nowhere() });
        }
        if bytes.is_empty() {
            return Err(PromptError::Empty { path: nowhere() });
        }
        let len = bytes.len() as u64;
        if len > CLIP_BYTES_MAX {
            return Err(PromptError::TooBig {
                path: nowhere(),
                len,
            });
        }
        let pad = (FRAME_BYTES - bytes.len() % FRAME_BYTES) % FRAME_BYTES;
        bytes.resize(bytes.len() + pad, law.silence_byte());
        let pair = self
            .langs
            .entry(lang.to_owned())
            .or_default()
            .entry(name.to_owned())
            .or_default();
        let slot = &mut pair[law.index()];
        if slot.is_none() {
            if self.clips >= CLIPS_MAX {
                return Err(PromptError::TooMany { path: nowhere() });
            }
            self.clips += 1;
        }
        *slot = Some(Arc::from(bytes));
        Ok(())
    }

    /// The clip `name` in `lang` and `law`, shared (a reference count, not a
    /// copy). Its length is a non-zero multiple of [`FRAME_BYTES`].
    pub fn clip(&self, lang: &str, name: &str, law: Law) -> Option<Arc<[u8]>> {
        self.langs.get(lang)?.get(name)?[law.index()].clone()
    }

    /// Whether `clip(lang, name, law)` would find a clip.
    pub fn contains(&self, lang: &str, name: &str, law: Law) -> bool {
        self.langs
            .get(lang)
            .and_then(|l| l.get(name))
            .is_some_and(|pair| pair[law.index()].is_some())
    }

    /// The languages that have at least one clip, in sorted order.
    pub fn languages(&self) -> impl Iterator<Item = &str> {
        self.langs.keys().map(String::as_str)
    }

    /// The clip names of `lang` (either law), in sorted order; empty for an
    /// unknown language.
    pub fn names<'a>(&'a self, lang: &str) -> impl Iterator<Item = &'a str> {
        self.langs
            .get(lang)
            .into_iter()
            .flat_map(|l| l.keys().map(String::as_str))
    }

    /// How many clips (files) the library holds, both laws counted.
    pub fn len(&self) -> usize {
        self.clips
    }

    /// Whether the library holds no clip.
    pub fn is_empty(&self) -> bool {
        self.clips == 0
    }
}

impl PromptError {
    /// Put the file that an [`PromptLibrary::insert`] error is about into
    /// the error.
    fn at(self, file: PathBuf) -> PromptError {
        match self {
            PromptError::Empty { .. } => PromptError::Empty { path: file },
            PromptError::TooBig { len, .. } => PromptError::TooBig { path: file, len },
            PromptError::BadName { .. } => PromptError::BadName { path: file },
            other => other,
        }
    }
}

/// Read one clip file, checking its size before reading so a huge file is
/// refused without being loaded.
fn read_clip(path: &Path) -> Result<Vec<u8>, PromptError> {
    let read_err = |source| PromptError::Read {
        path: path.to_path_buf(),
        source,
    };
    let len = fs::metadata(path).map_err(read_err)?.len();
    if len > CLIP_BYTES_MAX {
        return Err(PromptError::TooBig {
            path: path.to_path_buf(),
            len,
        });
    }
    if len == 0 {
        return Err(PromptError::Empty {
            path: path.to_path_buf(),
        });
    }
    // The file may grow between metadata and read: read at most one byte
    // over the cap, and let insert refuse it.
    let mut bytes = Vec::with_capacity(len as usize);
    fs::File::open(path)
        .and_then(|f| f.take(CLIP_BYTES_MAX + 1).read_to_end(&mut bytes))
        .map_err(read_err)?;
    Ok(bytes)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= NAME_LEN_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A language directory: a valid name that starts with a letter (so
/// `__pycache__` and hidden directories are not languages).
fn valid_lang(s: &str) -> bool {
    valid_name(s) && s.as_bytes()[0].is_ascii_alphabetic()
}

/// The prompts a gateway with this configuration plays: `prompts.dir` if
/// set, else the [embedded](PromptLibrary::embedded) ones.
pub fn load_configured(cfg: &crate::config::Config) -> std::io::Result<PromptLibrary> {
    match &cfg.prompts.dir {
        Some(dir) => PromptLibrary::load(dir).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("prompts.dir: {e}"),
            )
        }),
        None => Ok(PromptLibrary::embedded()),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// The clips call flows 1 and 2 need in every shipped language.
    const NEEDED: [&str; 16] = [
        "digit-0",
        "digit-1",
        "digit-2",
        "digit-3",
        "digit-4",
        "digit-5",
        "digit-6",
        "digit-7",
        "digit-8",
        "digit-9",
        "connecting",
        "code-intro",
        "repeat",
        "confirm-prompt",
        "goodbye",
        "notification-generic",
    ];

    /// Mean absolute deviation of the decoded samples from their mean.
    fn mean_abs_dev(clip: &[u8], law: Law) -> f64 {
        let n = clip.len() as f64;
        let mean = clip.iter().map(|&c| f64::from(law.decode(c))).sum::<f64>() / n;
        clip.iter()
            .map(|&c| (f64::from(law.decode(c)) - mean).abs())
            .sum::<f64>()
            / n
    }

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let p =
                std::env::temp_dir().join(format!("kolokol-prompt-{}-{tag}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).expect("create scratch dir");
            Scratch(p)
        }

        fn write(&self, rel: &str, bytes: &[u8]) {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().expect("rel has a parent")).expect("mkdir");
            fs::write(p, bytes).expect("write");
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn g711_decoder_matches_reference_points() {
        // Values from the ITU-T G.711 tables (as decoded by g711.c).
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x7f), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0xfe), 8);
        assert_eq!(ulaw_to_linear(0xef), 132);
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xaa), 32256);
        assert_eq!(alaw_to_linear(0x2a), -32256);
        assert_eq!(alaw_to_linear(0xc5), 264);
        // Both laws are monotonic over their positive halves and symmetric.
        for law in Law::ALL {
            let mut pos: Vec<i16> = (0..=255u8).map(|c| law.decode(c)).collect();
            pos.sort_unstable();
            pos.dedup();
            assert!(pos.len() >= 255, "{law:?} has {} levels", pos.len());
            assert!(pos.iter().all(|v| pos.binary_search(&-v).is_ok()));
        }
        assert_eq!(Law::Mu.decode(Law::Mu.silence_byte()), 0);
        assert_eq!(Law::A.decode(Law::A.silence_byte()).abs(), 8);
    }

    #[test]
    fn shipped_prompts_load_and_are_speech() {
        let lib = PromptLibrary::load_default().expect("config/prompts loads");
        assert_eq!(lib.languages().collect::<Vec<_>>(), ["en", "ru"]);
        assert_eq!(lib.len(), 2 * NEEDED.len() * 2);
        for lang in ["en", "ru"] {
            for name in NEEDED {
                for law in Law::ALL {
                    let clip = lib
                        .clip(lang, name, law)
                        .unwrap_or_else(|| panic!("{lang}/{name}.{}", law.extension()));
                    assert_eq!(clip.len() % FRAME_BYTES, 0);
                    // A digit is at least 0.2 s, a sentence at most 10 s.
                    assert!((1600..=80_000).contains(&clip.len()), "{lang}/{name}");
                    // Speech normalised to -3 dBFS peak has a mean absolute
                    // deviation in the thousands; digital silence has 0
                    // and line noise a few tens.
                    let mad = mean_abs_dev(&clip, law);
                    assert!(mad > 500.0, "{lang}/{name} {law:?}: {mad:.0}");
                }
            }
        }
        assert!(lib.clip("en", "digit-10", Law::Mu).is_none());
        assert!(lib.clip("fr", "digit-1", Law::Mu).is_none());
        assert!(lib.contains("ru", "goodbye", Law::A));
        assert_eq!(lib.names("en").count(), NEEDED.len());
    }

    #[test]
    fn both_laws_of_a_shipped_clip_say_the_same_thing() {
        let lib = PromptLibrary::load_default().expect("config/prompts loads");
        let mu = lib.clip("en", "code-intro", Law::Mu).expect("µ-law clip");
        let a = lib.clip("en", "code-intro", Law::A).expect("A-law clip");
        assert_eq!(mu.len(), a.len());
        // The same linear signal in two laws: sample by sample within the
        // coarser of the two quantisation steps (at most 1/16 of the value
        // plus the smallest step).
        for (&m, &x) in mu.iter().zip(a.iter()) {
            let (m, x) = (i32::from(Law::Mu.decode(m)), i32::from(Law::A.decode(x)));
            assert!(
                (m - x).abs() <= m.abs().max(x.abs()) / 16 + 16,
                "{m} vs {x}"
            );
        }
    }

    #[test]
    fn missing_dir_is_a_clear_error() {
        let err = PromptLibrary::load(Path::new("/nonexistent/kolokol/prompts")).unwrap_err();
        assert!(matches!(err, PromptError::Dir { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/kolokol/prompts"));
    }

    #[test]
    fn empty_dir_and_empty_file_are_errors() {
        let s = Scratch::new("empty");
        s.write("README", b"not a clip");
        s.write("__pycache__/x.ul", &[0xff; 160]);
        let err = PromptLibrary::load(&s.0).unwrap_err();
        assert!(matches!(err, PromptError::NoClips { .. }), "{err:?}");

        s.write("en/hello.ul", b"");
        let err = PromptLibrary::load(&s.0).unwrap_err();
        assert!(matches!(&err, PromptError::Empty { path } if path.ends_with("en/hello.ul")));
        assert!(err.to_string().contains("hello.ul is empty"), "{err}");
    }

    #[test]
    fn short_clip_is_padded_with_the_laws_silence() {
        let s = Scratch::new("pad");
        s.write("en/a.ul", &[0x00; 161]);
        s.write("en/a.al", &[0x2a; 100]);
        s.write("en/notes.txt", b"ignored");
        let lib = PromptLibrary::load(&s.0).expect("loads");
        let mu = lib.clip("en", "a", Law::Mu).expect("µ-law");
        assert_eq!(mu.len(), 320);
        assert!(mu[..161].iter().all(|&b| b == 0x00));
        assert!(mu[161..].iter().all(|&b| b == 0xff));
        let a = lib.clip("en", "a", Law::A).expect("A-law");
        assert_eq!(a.len(), 160);
        assert!(a[100..].iter().all(|&b| b == 0xd5));
        assert_eq!(lib.len(), 2);
        assert_eq!(lib.languages().collect::<Vec<_>>(), ["en"]);
    }

    #[test]
    fn too_big_and_bad_names_are_refused() {
        let s = Scratch::new("big");
        s.write("en/huge.ul", &vec![0xff; CLIP_BYTES_MAX as usize + 1]);
        let err = PromptLibrary::load(&s.0).unwrap_err();
        assert!(matches!(err, PromptError::TooBig { len, .. } if len == CLIP_BYTES_MAX + 1));

        let s = Scratch::new("name");
        s.write("en/two words.al", &[0xd5; 160]);
        let err = PromptLibrary::load(&s.0).unwrap_err();
        assert!(matches!(err, PromptError::BadName { .. }), "{err:?}");

        let mut lib = PromptLibrary::default();
        assert!(matches!(
            lib.insert("en", "../x", Law::Mu, vec![1]),
            Err(PromptError::BadName { .. })
        ));
        assert!(matches!(
            lib.insert("_x", "x", Law::Mu, vec![1]),
            Err(PromptError::BadName { .. })
        ));
        assert!(matches!(
            lib.insert("en", "x", Law::Mu, Vec::new()),
            Err(PromptError::Empty { .. })
        ));
        assert!(lib.is_empty());
    }

    #[test]
    fn insert_replaces_and_counts_once() {
        let mut lib = PromptLibrary::default();
        lib.insert("en", "x", Law::Mu, vec![1; 160])
            .expect("insert");
        lib.insert("en", "x", Law::Mu, vec![2; 160])
            .expect("replace");
        assert_eq!(lib.len(), 1);
        assert_eq!(lib.clip("en", "x", Law::Mu).expect("clip")[0], 2);
        assert!(lib.clip("en", "x", Law::A).is_none());
    }
}
