// Guest contract: lang_zig INPUT OUTPUT EXIT_CODE (see tests/test_languages.py).
const std = @import("std");

/// WASI has no global filesystem namespace: find the pre-opened directory that holds `path`.
fn preopenDir(init: std.process.Init, path: []const u8) !std.Io.Dir {
    const dir_name = std.fs.path.dirname(path) orelse return error.NotPreopened;
    return switch (init.preopens.get(dir_name) orelse return error.NotPreopened) {
        .dir => |d| d,
        .file => error.NotPreopened,
    };
}

pub fn main(init: std.process.Init) !u8 {
    const args = try init.minimal.args.toSlice(init.arena.allocator());
    if (args.len != 4) {
        std.debug.print("usage: lang_zig INPUT OUTPUT EXIT_CODE\n", .{});
        return 2;
    }
    const io = init.io;
    const name = init.environ_map.get("NAME") orelse "world";

    const in_dir = try preopenDir(init, args[1]);
    const text = try in_dir.readFileAlloc(io, std.fs.path.basename(args[1]), init.gpa, .limited(1 << 20));
    defer init.gpa.free(text);

    var count: usize = 0;
    var sum: i64 = 0;
    var words = std.mem.tokenizeAny(u8, text, " \t\r\n");
    while (words.next()) |word| {
        sum += try std.fmt.parseInt(i64, word, 10);
        count += 1;
    }

    var buf: [64]u8 = undefined;
    const result = try std.fmt.bufPrint(&buf, "count={d} sum={d}\n", .{ count, sum });
    const out_dir = try preopenDir(init, args[2]);
    try out_dir.writeFile(io, .{ .sub_path = std.fs.path.basename(args[2]), .data = result });

    var out_buf: [256]u8 = undefined;
    var stdout = std.Io.File.stdout().writer(io, &out_buf);
    try stdout.interface.print("hello {s} from zig: {d} numbers, sum {d}\n", .{ name, count, sum });
    try stdout.interface.flush();
    return try std.fmt.parseInt(u8, args[3], 10);
}
