// wc FILE: print "LINES WORDS BYTES FILE", like coreutils wc.
const std = @import("std");

pub fn main(init: std.process.Init) !u8 {
    const args = try init.minimal.args.toSlice(init.arena.allocator());
    if (args.len != 2) {
        std.debug.print("usage: wc FILE\n", .{});
        return 2;
    }
    // WASI has no global filesystem: open the file inside the pre-opened dir that holds it.
    const dir = switch (init.preopens.get(std.fs.path.dirname(args[1]) orelse ".") orelse {
        std.debug.print("{s}: not in a pre-opened directory\n", .{args[1]});
        return 1;
    }) {
        .dir => |d| d,
        .file => return 1,
    };
    const data = try dir.readFileAlloc(init.io, std.fs.path.basename(args[1]), init.gpa, .unlimited);
    defer init.gpa.free(data);

    const lines = std.mem.count(u8, data, "\n");
    var words: usize = 0;
    var it = std.mem.tokenizeAny(u8, data, " \t\r\n\x0b\x0c");
    while (it.next()) |_| words += 1;

    var buf: [256]u8 = undefined;
    var stdout = std.Io.File.stdout().writer(init.io, &buf);
    try stdout.interface.print("{d} {d} {d} {s}\n", .{ lines, words, data.len, args[1] });
    try stdout.interface.flush();
    return 0;
}
