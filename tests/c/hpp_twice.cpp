// bindings/cpp/plexus.hpp compiles alone and survives being included twice.
#include "plexus.hpp"
#include "plexus.hpp"

int main() { return plexus::forever == -1 ? 0 : 1; }
