//! Printing that outlives its reader. `println!` panics when stdout is a closed pipe
//! (`train bench RUN | head -1`); these macros drop the text instead, so a command whose reader
//! went away still finishes its real work (a stage's files, a bench's record in the run) and
//! exits with its own status, quietly, as `ls | head` does. The run's `train.log` keeps every
//! line a stage prints.

use std::io::Write;

/// Writes `args` and a newline to stdout; a write error (a closed pipe, a full disk behind a
/// redirect) is ignored.
pub fn stdout_line(args: std::fmt::Arguments) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
}

/// Writes `args` to stdout without a newline, flushed; errors ignored.
pub fn stdout(args: std::fmt::Arguments) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(args).and_then(|()| out.flush());
}

/// Writes `args` and a newline to stderr; errors ignored.
pub fn stderr_line(args: std::fmt::Arguments) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// `println!` that survives a closed stdout.
#[macro_export]
macro_rules! outln {
    () => { $crate::out::stdout_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::out::stdout_line(format_args!($($arg)*)) };
}

/// `print!` that survives a closed stdout.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::stdout(format_args!($($arg)*)) };
}

/// `eprintln!` that survives a closed stderr.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::out::stderr_line(format_args!($($arg)*)) };
}
