"""A fixed 24-item hardware catalog for tests and demos (written for Tandem, no external data)."""

from __future__ import annotations

from tandem.catalog.item import Item

_ROWS = [
    ("t01", "Cordless Drill 20V Lithium-Ion Kit", "Volta", "Tools/Power Tools/Drills", 129.0),
    ("t02", "Brushless Hammer Drill 18V", "Volta", "Tools/Power Tools/Drills", 199.0),
    ("t03", "Corded Drill 7 Amp Variable Speed", "Brackett", "Tools/Power Tools/Drills", 49.0),
    ("t04", "Drill Bit Set Titanium 29 Piece", "Brackett", "Tools/Accessories/Drill Bits", 24.5),
    ("t05", "Impact Driver 20V Compact", "Volta", "Tools/Power Tools/Impact Drivers", 139.0),
    ("t06", "Circular Saw 7-1/4 in. 15 Amp", "Sawtooth", "Tools/Power Tools/Saws", 89.0),
    ("t07", "Cordless Circular Saw 20V", "Volta", "Tools/Power Tools/Saws", 159.0),
    ("t08", "Hand Saw 15 in. Fine Cut", "Sawtooth", "Tools/Hand Tools/Saws", 17.0),
    ("t09", "Claw Hammer 16 oz Fiberglass Handle", "Brackett", "Tools/Hand Tools/Hammers", 19.0),
    ("t10", "Screwdriver Set 10 Piece Magnetic", "Brackett", "Tools/Hand Tools/Screwdrivers", 21.0),
    ("t11", "Interior Paint Eggshell White 1 Gallon", "Huehouse", "Paint/Interior Paint", 34.0),
    ("t12", "Exterior Paint Satin Gray 1 Gallon", "Huehouse", "Paint/Exterior Paint", 42.0),
    ("t13", "Paint Roller Kit 9 in. with Tray", "Huehouse", "Paint/Supplies", 12.0),
    ("t14", "Painter's Tape Blue 1.88 in.", "Stickwell", "Paint/Supplies", 6.5),
    ("t15", "LED Light Bulb 60W Equivalent Soft White 4-Pack", "Lumo", "Lighting/Light Bulbs", 9.0),
    ("t16", "LED Flush Mount Ceiling Light 13 in.", "Lumo", "Lighting/Ceiling Lights", 45.0),
    ("t17", "Outdoor Motion Sensor Flood Light LED", "Lumo", "Lighting/Outdoor Lighting", 39.0),
    ("t18", "Garden Hose 50 ft. Heavy Duty", "Greenreel", "Outdoors/Garden/Hoses", 29.0),
    ("t19", "Cordless String Trimmer 40V", "Volta", "Outdoors/Outdoor Power/Trimmers", 149.0),
    ("t20", "Gas Lawn Mower 21 in. Self Propelled", "Greenreel", "Outdoors/Outdoor Power/Mowers", 399.0),
    ("t21", "Kitchen Faucet Pull Down Stainless Steel", "Aquafin", "Plumbing/Faucets/Kitchen", 119.0),
    ("t22", "Bathroom Faucet Centerset Chrome", "Aquafin", "Plumbing/Faucets/Bathroom", 59.0),
    ("t23", "Toilet Two Piece Elongated White", "Aquafin", "Plumbing/Toilets", 169.0),
    ("t24", "Wood Screws #8 x 1-1/4 in. 100 Pack", "Brackett", "Hardware/Fasteners/Screws", 7.5),
]


def tiny_catalog() -> list[Item]:
    """The 24 items, with brand, category path and price."""
    return [Item(item_id=i, title=t, brand=b, category=c, price=p) for i, t, b, c, p in _ROWS]
