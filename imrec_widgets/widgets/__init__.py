from .search_widget import SearchWidget as SearchWidget
from .umap_explorer import App as App
from .umap_explorer import UmapExplorer as UmapExplorer
