//! Where each parameter tensor lives in a model's one flat parameter buffer. Gradients use the same layout in
//! a buffer of their own, so that the optimizer, the gradient norm and a later all-reduce are one launch each.

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamEntry {
    pub name: String,
    pub offset: usize,
    pub shape: Vec<usize>,
    /// Normalization scales/shifts and biases: excluded from weight decay.
    pub no_decay: bool,
}

impl ParamEntry {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamLayout {
    entries: Vec<ParamEntry>,
    total: usize,
}

impl ParamLayout {
    /// Appends a tensor; offsets are kept 4-element aligned so that kernels may use 16-byte loads on each.
    pub fn push(&mut self, name: &str, shape: &[usize], no_decay: bool) {
        let offset = self.total.next_multiple_of(4);
        let e = ParamEntry { name: name.to_string(), offset, shape: shape.to_vec(), no_decay };
        self.total = offset + e.len();
        self.entries.push(e);
    }

    /// Elements in the flat buffer (alignment padding included).
    pub fn total(&self) -> usize {
        self.total
    }

    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    pub fn find(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    pub fn get(&self, name: &str) -> Result<&ParamEntry> {
        self.find(name).ok_or_else(|| Error::Invalid(format!("no parameter named '{name}'")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_aligned_and_disjoint() {
        let mut l = ParamLayout::default();
        l.push("a", &[3], true);
        l.push("w", &[2, 5], false);
        l.push("b", &[1], true);
        assert_eq!(l.get("a").unwrap().range(), 0..3);
        assert_eq!(l.get("w").unwrap().range(), 4..14);
        assert_eq!(l.get("b").unwrap().range(), 16..17);
        assert_eq!(l.total(), 17);
        assert!(l.get("nope").unwrap_err().to_string().contains("'nope'"));
    }
}
