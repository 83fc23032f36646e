"""Site data: MSD-layout site folders and splits, validation reports, synthetic phantom sites."""

from engine.data.check import CaseReport, SiteReport, check_site
from engine.data.phantoms import PhantomSite, generate_phantom_case, make_demo_sites, phantom_site_params
from engine.data.site import SPLIT_NAMES, Case, SiteDataset, seeded_split

__all__ = [
    "SPLIT_NAMES",
    "Case",
    "CaseReport",
    "PhantomSite",
    "SiteDataset",
    "SiteReport",
    "check_site",
    "generate_phantom_case",
    "make_demo_sites",
    "phantom_site_params",
    "seeded_split",
]
