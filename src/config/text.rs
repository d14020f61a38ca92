//! The text form of the configuration. (Interface placeholder.)
use super::Config;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

pub fn parse(_text: &str) -> Result<Config, ParseError> {
    todo!()
}
pub fn parse_into(_config: &mut Config, _text: &str) -> Result<(), ParseError> {
    todo!()
}
pub fn print(_config: &Config) -> String {
    todo!()
}
