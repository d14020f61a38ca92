//! Build tool for drawbridge: `cargo xtask bench|test`.
fn main() {
    eprintln!("usage: cargo xtask <bench relay|test>");
    std::process::exit(2);
}
