//! One error type for the library. Every variant a user can cause names the file or the value at fault.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum Error {
    /// A tensor of the wrong shape, dtype, layout or device at an op's boundary.
    Shape(String),
    /// The requested device cannot be used (no driver, no GPU, kernels not compiled in), and why.
    Device(String),
    /// A CUDA driver or library call failed.
    Cuda(String),
    /// A file could not be read or written.
    Io { path: PathBuf, source: std::io::Error },
    /// A file whose content is damaged or not what it claims to be (a cut checkpoint, a pack whose checksums fail,
    /// an image that does not decode, a bad line of a log or a CSV): the file, the line where the format has
    /// lines, and what is wrong.
    Corrupt { path: PathBuf, line: Option<u64>, what: String },
    /// An argument or flag with a value that cannot be used.
    Invalid(String),
    /// A training run that cannot go on: its loss or gradient norm stopped being finite.
    Diverged(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The message without its kind prefix ("no CUDA driver: ..." rather than "device error: no CUDA driver: ...").
    pub fn reason(&self) -> String {
        match self {
            Error::Shape(m) | Error::Device(m) | Error::Cuda(m) | Error::Invalid(m) | Error::Diverged(m) => m.clone(),
            Error::Io { .. } | Error::Corrupt { .. } => self.to_string(),
        }
    }

    /// For `map_err`: an I/O error on `path`.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io { path: path.to_path_buf(), source }
    }

    /// A damaged `path`, and what is wrong with it.
    pub fn corrupt(path: &Path, what: impl Into<String>) -> Error {
        Error::Corrupt { path: path.to_path_buf(), line: None, what: what.into() }
    }

    /// A damaged `path`, at its line `line` (1-based).
    pub fn corrupt_at(path: &Path, line: u64, what: impl Into<String>) -> Error {
        Error::Corrupt { path: path.to_path_buf(), line: Some(line), what: what.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape(m) => write!(f, "shape error: {m}"),
            Error::Device(m) => write!(f, "device error: {m}"),
            Error::Cuda(m) => write!(f, "CUDA error: {m}"),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Corrupt { path, line: None, what } => write!(f, "{}: {what}", path.display()),
            Error::Corrupt { path, line: Some(l), what } => write!(f, "{}:{l}: {what}", path.display()),
            Error::Invalid(m) => write!(f, "{m}"),
            Error::Diverged(m) => write!(f, "training diverged: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<cudarc::driver::DriverError> for Error {
    fn from(e: cudarc::driver::DriverError) -> Self {
        Error::Cuda(e.to_string())
    }
}

/// The value of `s` in a table of (name, value) pairs; the error names `what` and lists the names.
pub fn by_name<T: Copy>(s: &str, what: &str, table: &[(&str, T)]) -> Result<T> {
    table.iter().find(|(n, _)| *n == s).map(|(_, v)| *v).ok_or_else(|| {
        let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
        Error::Invalid(format!("{what} '{s}': choose {}", names.join(", ")))
    })
}

/// The name of `v` in a table of (name, value) pairs.
pub fn name_of<T: PartialEq>(v: &T, table: &[(&'static str, T)]) -> &'static str {
    table.iter().find(|(_, t)| t == v).map_or("?", |(n, _)| n)
}

/// A setting chosen by name, on the command line and in checkpoint metadata.
pub trait Choice: Copy + PartialEq + 'static {
    const NAMES: &'static [(&'static str, Self)];

    fn name(self) -> &'static str {
        name_of(&self, Self::NAMES)
    }

    /// From a name; `what` says where it came from (a flag, a metadata key), for the error.
    fn parse(s: &str, what: &str) -> Result<Self> {
        by_name(s, what, Self::NAMES)
    }
}

/// Shorthand for returning a shape error with a formatted message.
#[macro_export]
macro_rules! shape_err {
    ($($t:tt)*) => { return Err($crate::Error::Shape(format!($($t)*))) };
}
