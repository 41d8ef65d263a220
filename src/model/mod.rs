//! Model definitions, written once against the Backend trait.

pub mod params;
