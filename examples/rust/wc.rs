// wc FILE: print "LINES WORDS BYTES FILE", like coreutils wc.
use std::{env, fs, process};

fn main() {
    let args: Vec<String> = env::args().collect();
    if args.len() != 2 {
        eprintln!("usage: wc FILE");
        process::exit(2);
    }
    let data = fs::read(&args[1]).unwrap_or_else(|e| {
        eprintln!("{}: {e}", args[1]);
        process::exit(1);
    });
    let lines = data.iter().filter(|&&b| b == b'\n').count();
    let words = data.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()).count();
    println!("{lines} {words} {} {}", data.len(), args[1]);
}
