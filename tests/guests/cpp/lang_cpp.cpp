// Guest contract: lang_cpp INPUT OUTPUT EXIT_CODE (see tests/test_languages.py).
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <numeric>
#include <string>
#include <vector>

int main(int argc, char **argv) {
    if (argc != 4) {
        std::cerr << "usage: " << argv[0] << " INPUT OUTPUT EXIT_CODE\n";
        return 2;
    }
    const char *env = std::getenv("NAME");
    const std::string name = env ? env : "world";

    std::ifstream in(argv[1]);
    if (!in) {
        std::cerr << argv[1] << ": cannot open\n";
        return 1;
    }
    const std::vector<long long> numbers{std::istream_iterator<long long>(in),
                                         std::istream_iterator<long long>()};
    const long long sum = std::accumulate(numbers.begin(), numbers.end(), 0LL);

    std::ofstream out(argv[2]);
    out << "count=" << numbers.size() << " sum=" << sum << '\n';
    out.close();
    if (!out) {
        std::cerr << argv[2] << ": cannot write\n";
        return 1;
    }

    std::cout << "hello " << name << " from cpp: " << numbers.size() << " numbers, sum " << sum
              << '\n';
    return std::atoi(argv[3]);
}
