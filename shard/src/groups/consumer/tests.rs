//! Unit and property tests of KIP-848 consumer groups.
