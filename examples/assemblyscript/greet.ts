// greet [ARGS...]: greet $NAME and echo the arguments.
// The WASI shim covers args, env, stdout and exit; files need raw WASI calls
// (see tests/guests/as/lang_as.ts for path_open on a pre-opened directory).
const name = process.env.has("NAME") ? process.env.get("NAME") : "world";
const args = process.argv.slice(1);
console.log(`Hello, ${name}! ${args.length} argument(s): ${args.join(" ")}`);
