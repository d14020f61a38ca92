//! Command-line options of the bench subcommands: `--name value` and `--name=value`.

/// Walks the option words, calling `apply(name, value)` for each; `value()` fetches the
/// option's value (inline or the next word) when the option takes one, and
/// `apply` answers whether the option was known.
pub fn walk(
    args: &[String],
    mut apply: impl FnMut(
        &str,
        &mut dyn FnMut() -> Result<String, String>,
        bool,
    ) -> Result<bool, String>,
    subcommand: &str,
) -> Result<(), String> {
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let (name, inline_value) = match word.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (word.as_str(), None),
        };
        let has_inline = inline_value.is_some();
        let mut value = || {
            inline_value
                .clone()
                .or_else(|| words.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        if !apply(name, &mut value, has_inline)? {
            return Err(format!("unknown option `{word}` for {subcommand}"));
        }
    }
    Ok(())
}

/// A number within `min..=max`, or a message naming the option.
pub fn number(name: &str, text: &str, min: u32, max: u32) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{name} takes a number from {min} to {max}, not `{text}`"
        )),
    }
}
