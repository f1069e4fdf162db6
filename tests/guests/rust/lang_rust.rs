// Guest contract: lang_rust INPUT OUTPUT EXIT_CODE (see tests/test_languages.py).
use std::{env, fs, process};

fn run(args: &[String]) -> Result<i32, String> {
    let (input, output, code) = match args {
        [_, input, output, code] => (input, output, code),
        _ => return Err("usage: lang_rust INPUT OUTPUT EXIT_CODE".into()),
    };
    let name = env::var("NAME").unwrap_or_else(|_| "world".into());
    let text = fs::read_to_string(input).map_err(|e| format!("{input}: {e}"))?;
    let numbers = text
        .split_whitespace()
        .map(|w| w.parse::<i64>().map_err(|e| format!("{w:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let sum: i64 = numbers.iter().sum();
    fs::write(output, format!("count={} sum={}\n", numbers.len(), sum))
        .map_err(|e| format!("{output}: {e}"))?;
    println!("hello {name} from rust: {} numbers, sum {sum}", numbers.len());
    code.parse().map_err(|e| format!("exit code {code:?}: {e}"))
}

fn main() {
    let args: Vec<String> = env::args().collect();
    match run(&args) {
        Ok(code) => process::exit(code),
        Err(msg) => {
            eprintln!("{msg}");
            process::exit(if args.len() == 4 { 1 } else { 2 });
        }
    }
}
