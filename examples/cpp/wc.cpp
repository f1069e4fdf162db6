// wc FILE: print "LINES WORDS BYTES FILE", like coreutils wc.
#include <algorithm>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>

int main(int argc, char **argv) {
    if (argc != 2) {
        std::cerr << "usage: wc FILE\n";
        return 2;
    }
    std::ifstream in(argv[1], std::ios::binary);
    if (!in) {
        std::cerr << argv[1] << ": cannot open\n";
        return 1;
    }
    const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    std::istringstream words_in(text);
    const auto words = std::distance(std::istream_iterator<std::string>(words_in),
                                     std::istream_iterator<std::string>());
    std::cout << std::count(text.begin(), text.end(), '\n') << ' ' << words << ' '
              << text.size() << ' ' << argv[1] << '\n';
    return 0;
}
