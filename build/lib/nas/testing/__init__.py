"""Contract test suites for extension points: subclass them in your own tests to check a custom plug-in.

```python
class TestMySpace(SearchSpaceContract):
    space = my_space()

class TestMySupernet(SupernetContract):
    def make_supernet(self):
        return MySupernet(my_space())
```
"""

from __future__ import annotations

from nas.testing.contracts import SearchSpaceContract, SupernetContract

__all__ = ["SearchSpaceContract", "SupernetContract"]
