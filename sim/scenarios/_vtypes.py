"""Vehicle types shared by the bundled scenarios (Swedish urban traffic: cars, some trucks, city buses)."""

from __future__ import annotations

from ._xml import tag

TRAFFIC_MIX = "traffic"  # vTypeDistribution id used by every general-traffic flow
TRUCK_SHARE = 0.06


def vtype_lines() -> list[str]:
    """``<vType>`` / ``<vTypeDistribution>`` lines for a route file: cars + trucks as ``traffic``, plus ``bus``."""
    car = tag("vType", {"id": "car", "vClass": "passenger", "length": 4.6, "minGap": 2.5, "accel": 2.6,
                        "decel": 4.5, "sigma": 0.5, "tau": 1.0, "probability": 1 - TRUCK_SHARE}, indent=2)
    truck = tag("vType", {"id": "truck", "vClass": "truck", "length": 10.0, "minGap": 2.5, "accel": 1.3,
                          "decel": 4.0, "sigma": 0.5, "tau": 1.0, "maxSpeed": 25.0, "probability": TRUCK_SHARE,
                          "guiShape": "truck"}, indent=2)
    bus = tag("vType", {"id": "bus", "vClass": "bus", "length": 12.0, "minGap": 2.5, "accel": 1.2, "decel": 4.0,
                        "sigma": 0.3, "tau": 1.0, "maxSpeed": 22.0, "personCapacity": 85, "guiShape": "bus"})
    return [tag("vTypeDistribution", {"id": TRAFFIC_MIX}, [car, truck]), bus]
