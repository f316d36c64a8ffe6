"""Writes NHS-number test cases judged by the independent `nhs-number` package (PyPI).

Prints one line per number: "<10 digits> <1 if valid else 0>". Half the numbers are generated
valid, the rest generated invalid or random, plus every repeated-digit number (which the package
accepts on checksum alone and CP-IS refuses as implausible; the caller knows this). Seeded, so a
failure reproduces.
"""

import random
import sys

import nhs_number

random.seed(int(sys.argv[1]) if len(sys.argv) > 1 else 2026)
numbers = nhs_number.generate(valid=True, quantity=50_000)
numbers += nhs_number.generate(valid=False, quantity=40_000)
numbers += ["%010d" % random.randrange(10**10) for _ in range(10_000)]
numbers += [str(d) * 10 for d in range(10)]
for n in numbers:
    print(n, 1 if nhs_number.is_valid(n) else 0)
