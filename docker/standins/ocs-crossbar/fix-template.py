"""Write OCS's crossbar config template, fixed for today's crossbar.

Usage: fix-template.py OCS_WHEEL OUTPUT

Reads ocs/support/crossbar_config.json from the ocs wheel (the template OCS's
crossbar image fills with sed; {address_root}, {realm} and {port} stay as
they are) and raises the websocket option auto_ping_size from 4 to 12:
crossbar >= 22 refuses values below 12 ("must be between 12 and 125").
Fails if the template no longer says 4 there, so a changed template is
looked at rather than patched blindly.
"""

import re
import sys
import zipfile

TEMPLATE = 'ocs/support/crossbar_config.json'
PING_SIZE = re.compile(r'("auto_ping_size"\s*:\s*)4\b')


def main(wheel: str, output: str) -> int:
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(TEMPLATE).decode('utf-8')
    fixed, count = PING_SIZE.subn(r'\g<1>12', text)
    if count != 1:
        print(f'fix-template: expected one "auto_ping_size": 4 in {TEMPLATE}, found {count}',
              file=sys.stderr)
        return 1
    for field in ('{address_root}', '{realm}', '{port}'):
        if field not in fixed:
            print(f'fix-template: {TEMPLATE} has no {field} to fill', file=sys.stderr)
            return 1
    with open(output, 'w', encoding='utf-8') as out:
        out.write(fixed)
    return 0


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
