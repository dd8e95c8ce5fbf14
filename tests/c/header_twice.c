/* include/plexus.h compiles alone (first include, nothing before it) and survives being
 * included twice; built as C11 and as C++17 by scripts/test-c.sh. */
#include "plexus.h"
#include "plexus.h"

int main(void) {
    plexus_result rc = PLEXUS_OK;
    plexus_event ev;
    ev.op = PLEXUS_OP_UNARY;
    return (int)rc + (ev.op == PLEXUS_OP_UNARY ? 0 : 1);
}
