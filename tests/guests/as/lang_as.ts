// Guest contract: lang_as INPUT OUTPUT EXIT_CODE (see tests/test_languages.py).
// The WASI shim provides process.argv/env/exit and console; files need the raw WASI calls.
import {
  errno,
  fd,
  fd_close,
  fd_prestat_dir_name,
  fd_prestat_get,
  fd_read,
  fd_write,
  oflags,
  path_open,
  prestat,
  rights,
} from "@assemblyscript/wasi-shim/assembly/bindings/wasi_snapshot_preview1";

function fail(msg: string, code: i32 = 1): void {
  process.stderr.write(msg + "\n"); // the shim's console.error writes to stdout
  process.exit(code);
}

/** WASI has no global namespace: open `path` relative to the pre-opened dir that holds it. */
function open(path: string, flags: oflags, base: rights): fd {
  const slash = path.lastIndexOf("/");
  const dirName = path.substring(0, slash);
  const rel = String.UTF8.encode(path.substring(slash + 1));
  const stat = changetype<prestat>(memory.data(8));
  for (let dir: fd = 3; fd_prestat_get(dir, stat) == errno.SUCCESS; dir++) {
    const nameLen = load<u32>(changetype<usize>(stat), 4);
    const name = new ArrayBuffer(nameLen);
    fd_prestat_dir_name(dir, changetype<usize>(name), nameLen);
    if (String.UTF8.decode(name) != dirName) continue;
    const opened = new ArrayBuffer(4);
    const err = path_open(dir, 0, changetype<usize>(rel), rel.byteLength, flags, base, 0, 0,
      changetype<usize>(opened));
    if (err != errno.SUCCESS) fail(path + ": errno " + err.toString());
    return load<fd>(changetype<usize>(opened));
  }
  fail(path + ": not in a pre-opened directory");
  return 0;
}

function readAll(file: fd): string {
  let text = "";
  const chunk = new ArrayBuffer(4096);
  const iov = new ArrayBuffer(8);
  const nread = new ArrayBuffer(4);
  store<usize>(changetype<usize>(iov), changetype<usize>(chunk));
  store<usize>(changetype<usize>(iov), chunk.byteLength, 4);
  while (true) {
    const err = fd_read(file, changetype<usize>(iov), 1, changetype<usize>(nread));
    if (err != errno.SUCCESS) fail("read: errno " + err.toString());
    const n = load<u32>(changetype<usize>(nread));
    if (n == 0) return text;
    text += String.UTF8.decodeUnsafe(changetype<usize>(chunk), n);
  }
}

function writeAll(file: fd, text: string): void {
  const data = String.UTF8.encode(text);
  const iov = new ArrayBuffer(8);
  const nwritten = new ArrayBuffer(4);
  let off: u32 = 0;
  while (off < <u32>data.byteLength) {
    store<usize>(changetype<usize>(iov), changetype<usize>(data) + off);
    store<usize>(changetype<usize>(iov), data.byteLength - off, 4);
    const err = fd_write(file, changetype<usize>(iov), 1, changetype<usize>(nwritten));
    if (err != errno.SUCCESS) fail("write: errno " + err.toString());
    off += load<u32>(changetype<usize>(nwritten));
  }
}

const args = process.argv;
if (args.length != 4) fail("usage: lang_as INPUT OUTPUT EXIT_CODE", 2);
const name = process.env.has("NAME") ? process.env.get("NAME") : "world";

const input = open(args[1], 0, rights.FD_READ);
const words = readAll(input).replaceAll("\n", " ").replaceAll("\t", " ").replaceAll("\r", " ").split(" ");
fd_close(input);
let count = 0;
let sum: i64 = 0;
for (let i = 0; i < words.length; i++) {
  if (words[i].length == 0) continue;
  sum += I64.parseInt(words[i], 10);
  count++;
}

const output = open(args[2], oflags.CREAT | oflags.TRUNC, rights.FD_WRITE);
writeAll(output, `count=${count} sum=${sum}\n`);
fd_close(output);

console.log(`hello ${name} from as: ${count} numbers, sum ${sum}`);
process.exit(I32.parseInt(args[3], 10));
